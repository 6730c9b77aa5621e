"""Tools: ``sd.tl.embed_genes``, ``sd.tl.cell_sentences``, ``sd.tl.cluster``."""

from ._cell_sentences import cell_sentences
from ._cluster import cluster
from ._embed_genes import embed_genes

__all__ = ["embed_genes", "cell_sentences", "cluster"]
