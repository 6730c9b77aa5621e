"""Sparse cell graphs and graph propagation of features (structural view)."""

from ._build import CellGraph, build_graph, neighbor_table
from ._propagate import normalized_adjacency, propagate

__all__ = ["CellGraph", "build_graph", "neighbor_table", "normalized_adjacency", "propagate"]
