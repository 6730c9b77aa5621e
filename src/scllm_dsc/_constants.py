"""Central names of the keys this package reads and writes in AnnData objects."""

from __future__ import annotations

from typing import Final


class Key:
    """Default keys in :class:`anndata.AnnData`."""

    # sd.tl.embed_genes
    GENE_TEXT: Final = "gene_text"  # varm (genes x d), uns
    GENE_TEXT_FOUND: Final = "gene_text_found"  # var (bool)
    X_GENE_TEXT: Final = "X_gene_text"  # obsm (cells x d), Path 1
    # sd.tl.cell_sentences
    CELL_SENTENCE: Final = "cell_sentence"  # obs (str), uns
    X_CELL_SENTENCE: Final = "X_cell_sentence"  # obsm (cells x d), Path 2
    # sd.tl.cluster
    CLUSTER: Final = "scllm_dsc"  # default key_added

    @staticmethod
    def neighbors(key: str) -> str:
        """``uns`` key of the neighbors-style entry of the cell graph (``neighbors_key=``)."""
        return f"{key}_neighbors"

    @staticmethod
    def connectivities(key: str) -> str:
        return f"{key}_connectivities"

    @staticmethod
    def distances(key: str) -> str:
        return f"{key}_distances"

    @staticmethod
    def latent(key: str) -> str:
        return f"X_{key}"

    @staticmethod
    def proba(key: str) -> str:
        return f"{key}_proba"

    @staticmethod
    def semantic(key: str) -> str:
        """Projected semantic view in the shared (aligned) space."""
        return f"X_{key}_semantic"

    @staticmethod
    def structural(key: str) -> str:
        """Projected structural view in the shared (aligned) space."""
        return f"X_{key}_structural"


DEFAULT_MODEL: Final = "sentence-transformers/all-MiniLM-L6-v2"
