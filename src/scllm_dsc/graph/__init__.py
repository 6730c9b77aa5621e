"""Sparse cell graphs and graph propagation of features (structural view)."""

from ._augment import drop_weak_edges, ppr_propagate
from ._build import CellGraph, build_graph, knn_transformer, neighbor_table, neighbors
from ._genes import gene_graph
from ._leiden import leiden_labels, leiden_n_clusters
from ._merge import merge_clusters, overcluster_merge
from ._propagate import normalized_adjacency, propagate

__all__ = [
    "CellGraph",
    "build_graph",
    "drop_weak_edges",
    "gene_graph",
    "knn_transformer",
    "leiden_labels",
    "leiden_n_clusters",
    "merge_clusters",
    "neighbor_table",
    "neighbors",
    "normalized_adjacency",
    "overcluster_merge",
    "ppr_propagate",
    "propagate",
]
