"""Tools: gene knowledge, cell sentences, clustering, cluster annotation and label transfer."""

from ._alignment_scores import alignment_scores
from ._annotate import annotate_clusters
from ._cell_sentences import cell_sentences
from ._cluster import cluster
from ._embed_genes import embed_genes
from ._refine import refine_embedding, transfer_labels

__all__ = [
    "embed_genes",
    "cell_sentences",
    "cluster",
    "annotate_clusters",
    "refine_embedding",
    "transfer_labels",
    "alignment_scores",
]
