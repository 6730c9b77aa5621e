"""Shared helpers of the reliability tests: AnnData fingerprints, small data, captured logs."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# fast settings of sd.tl.cluster for a few hundred cells on one CPU thread
FAST = dict(
    n_top_genes=200,
    n_pcs=10,
    n_latent=8,
    max_epochs=2,
    batch_size=64,
    model_kwargs={"n_hidden": 16},
    train_kwargs={"enable_progress_bar": False},
)


# -- fingerprints -------------------------------------------------------------------------------
def _hash_array(x) -> str:
    """Hash of a dense, sparse or backed matrix: format, shape, dtype and every stored value."""
    h = hashlib.sha256()
    if x is None:
        return "None"
    if not (sparse.issparse(x) or isinstance(x, np.ndarray)):
        if hasattr(x, "to_memory"):  # backed sparse dataset
            x = x.to_memory()
        else:  # h5py dataset, array-likes
            x = np.asarray(x[()] if hasattr(x, "shape") and hasattr(x, "dtype") else x)
    if sparse.issparse(x):
        x = sparse.csr_matrix(x)  # same values -> same hash, whatever the sparse class
        h.update(f"sparse{x.shape}{x.dtype}".encode())
        for part in (x.indptr, x.indices, x.data):
            h.update(np.ascontiguousarray(part).tobytes())
    else:
        x = np.asarray(x)
        h.update(f"dense{x.shape}{x.dtype}".encode())
        if x.dtype == object:
            h.update(repr(x.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def _hash_value(v) -> str:
    if isinstance(v, pd.DataFrame):
        return _hash_frame(v)
    if isinstance(v, pd.Series | pd.Index):
        try:
            body = pd.util.hash_pandas_object(pd.Series(v), index=False).to_numpy().tobytes()
        except TypeError:  # unhashable cells
            body = repr(list(v)).encode()
        return hashlib.sha256(str(v.dtype).encode() + body).hexdigest()
    return _hash_array(v)


def _hash_frame(df: pd.DataFrame) -> str:
    h = hashlib.sha256(_hash_value(df.index).encode())
    for col in df.columns:
        h.update(str(col).encode())
        h.update(_hash_value(df[col]).encode())
    return h.hexdigest()


def adata_fingerprint(adata) -> dict:
    """What a tool must never change behind the user's back.

    Hashes of ``X``, every layer, every ``obs``/``var`` column, the names, every ``obsm``/
    ``varm``/``obsp`` entry, and the keys of ``uns``. Two fingerprints compare equal with
    ``==``; :func:`assert_only_added` compares them allowing documented outputs.
    """
    return {
        "shape": tuple(adata.shape),
        "X": _hash_array(adata.X),
        "layers": {k: _hash_array(v) for k, v in adata.layers.items()},
        "obs_names": _hash_value(adata.obs_names),
        "var_names": _hash_value(adata.var_names),
        "obs": {c: _hash_value(adata.obs[c]) for c in adata.obs.columns},
        "var": {c: _hash_value(adata.var[c]) for c in adata.var.columns},
        "obsm": {k: _hash_value(v) for k, v in adata.obsm.items()},
        "varm": {k: _hash_value(v) for k, v in adata.varm.items()},
        "obsp": {k: _hash_array(v) for k, v in adata.obsp.items()},
        "uns": sorted(adata.uns.keys()),
    }


def assert_only_added(before: dict, adata, **documented) -> None:
    """``adata`` differs from the fingerprint ``before`` only by the documented outputs.

    ``documented`` maps ``obs``, ``var``, ``obsm``, ``varm``, ``obsp`` and ``uns`` to the keys a
    tool may add or overwrite. ``X``, layers, names and every other entry must be unchanged.
    """
    after = adata_fingerprint(adata)
    for part in ("shape", "X", "layers", "obs_names", "var_names"):
        assert after[part] == before[part], f"{part} changed"
    for part in ("obs", "var", "obsm", "varm", "obsp"):
        allowed = set(documented.get(part, ()))
        for key, h in before[part].items():
            if key not in allowed:
                assert after[part].get(key) == h, f"{part}[{key!r}] changed or removed"
        added = set(after[part]) - set(before[part])
        assert added <= allowed, f"undocumented {part} keys written: {sorted(added - allowed)}"
    added_uns = set(after["uns"]) - set(before["uns"])
    assert added_uns <= set(documented.get("uns", ())), f"undocumented uns keys: {added_uns}"
    assert set(before["uns"]) <= set(after["uns"]), "uns keys removed"


# -- small data ---------------------------------------------------------------------------------
def semantic_standin(adata, d: int = 16, seed: int = 0) -> None:
    """Stand-ins for both semantic paths: random projections of log-normalised expression
    (the control of section 9 of the method notes), L2-normalised."""
    from scllm_dsc.tl._semantic import normalize_block  # scanpy's normalize_total + log1p

    X = normalize_block(adata.X, is_counts=True)
    R = np.random.default_rng(seed).normal(size=(adata.n_vars, d))
    Z = np.asarray(X @ R, dtype=np.float32)
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    adata.obsm["X_gene_text"] = Z
    adata.obsm["X_cell_sentence"] = np.roll(Z, 1, axis=1)


def tiny_knowledge(genes) -> dict[str, str]:
    """A gene text per gene, in the vocabulary of the tiny test tokenizer."""
    words = ["gene", "cell", "protein", "receptor", "kinase", "immune", "binds", "hormone"]
    return {
        str(g): f"{str(g).lower()} {words[i % len(words)]} {words[(3 * i + 1) % len(words)]}"
        for i, g in enumerate(genes)
    }


# -- logs ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def scanpy_warnings():
    """Collect the messages logged with ``scanpy.logging.warning`` (what the tools warn)."""
    import scanpy as sc

    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    root = sc.settings._root_logger
    handler = _Collect(level=logging.WARNING)
    root.addHandler(handler)
    try:
        yield messages
    finally:
        root.removeHandler(handler)


# -- documented outputs of each tool (default keys) ---------------------------------------------
EMBED_GENES_OUT = dict(
    var=["gene_text_found"], varm=["gene_text"], obsm=["X_gene_text"], uns=["gene_text"]
)
CELL_SENTENCES_OUT = dict(obs=["cell_sentence"], obsm=["X_cell_sentence"], uns=["cell_sentence"])
CLUSTER_OUT = dict(
    obs=["scllm_dsc"],
    obsm=[
        "X_scllm_dsc",
        "scllm_dsc_proba",
        "X_scllm_dsc_semantic",
        "X_scllm_dsc_structural",
        "X_gene_text",  # computed with defaults when missing
        "X_cell_sentence",
    ],
    obsp=["scllm_dsc_connectivities", "scllm_dsc_distances"],
    uns=["scllm_dsc", "scllm_dsc_neighbors"],
)
SETUP_OUT = dict(  # SCLLMDSC.setup_anndata: the graph, private registered arrays, cell index
    obs=["_indices"],
    obsm=["_scllm_dsc_features", "_scllm_dsc_nn_indices", "_scllm_dsc_nn_weights"],
    obsp=["scllm_dsc_connectivities", "scllm_dsc_distances"],
    uns=["scllm_dsc_neighbors", "_scllm_dsc_reference", "_scvi_uuid", "_scvi_manager_uuid"],
)


def merge(*outputs: dict) -> dict:
    """Union of documented outputs (for a sequence of tools)."""
    out: dict[str, list] = {}
    for o in outputs:
        for k, v in o.items():
            out.setdefault(k, [])
            out[k] += [x for x in v if x not in out[k]]
    return out


def pipeline(model: str) -> dict[str, np.ndarray]:
    """Both semantic paths (tiny text model) and the clustering of 200 PBMC cells."""
    from conftest import synthetic

    import scllm_dsc as sd

    a = synthetic(200, 300)
    sd.tl.embed_genes(a, tiny_knowledge(a.var_names), model=model, species="human")
    sd.tl.cell_sentences(a, model=model)
    sd.tl.cluster(a, n_clusters=3, **FAST)
    out = {k: np.asarray(a.obsm[k]) for k in ("X_gene_text", "X_cell_sentence", "X_scllm_dsc")}
    out["labels"] = a.obs["scllm_dsc"].to_numpy().astype(str)
    return out
