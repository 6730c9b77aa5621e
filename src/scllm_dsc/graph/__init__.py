"""Sparse cell graphs and graph propagation of features (structural view)."""

from ._build import CellGraph, build_graph, knn_transformer, neighbor_table, neighbors
from ._leiden import leiden_labels, leiden_n_clusters
from ._propagate import normalized_adjacency, propagate

__all__ = [
    "CellGraph",
    "build_graph",
    "knn_transformer",
    "leiden_labels",
    "leiden_n_clusters",
    "neighbor_table",
    "neighbors",
    "normalized_adjacency",
    "propagate",
]
