"""Plots of the cross-modal alignment, of training and of the clusters.

All functions follow :mod:`scanpy.pl` conventions (``show``, ``save``, ``return_fig``,
scanpy's palettes and figure settings) and say which ``sd.tl`` call to run when a key they
need is missing.
"""

from ._alignment import alignment
from ._annotation import annotation
from ._cluster_genes import cluster_gene_table, cluster_genes
from ._history import training_history
from ._utils import MissingKeyError, semantic_key, structural_key, umap_key
from ._views import views

__all__ = [
    "alignment",
    "annotation",
    "views",
    "training_history",
    "cluster_genes",
    "cluster_gene_table",
    "semantic_key",
    "structural_key",
    "umap_key",
    "MissingKeyError",
]
