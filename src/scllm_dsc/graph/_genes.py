"""Gene-gene kNN graph for the gene-graph refinement (scRCL ideas)."""

from __future__ import annotations

import numpy as np


def gene_graph(profiles: np.ndarray, n_neighbors: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric-normalised gene-gene kNN graph (cosine) with self loops, as an edge list.

    Parameters
    ----------
    profiles
        Genes x features, e.g. the genes' PCA loadings scaled by the components' standard
        deviations (where each gene sits in the cells' principal space).
    n_neighbors
        Neighbours per gene (capped at the number of genes minus one).

    Returns
    -------
    ``(edge_index, edge_weight)``: 2 x E int64 and E float32, ready for a GCN
    (:func:`torch_geometric.nn.conv.gcn_conv.gcn_norm` weights).
    """
    import torch
    from sklearn.neighbors import NearestNeighbors
    from torch_geometric.nn.conv.gcn_conv import gcn_norm
    from torch_geometric.utils import to_undirected

    P = np.asarray(profiles, dtype=np.float32)
    n = P.shape[0]
    if n < 2:
        raise ValueError(f"Need at least 2 genes for a gene graph, got {n}.")
    k = int(min(n_neighbors, n - 1))
    norms = np.linalg.norm(P, axis=1, keepdims=True)
    P = P / np.maximum(norms, 1e-12)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(P).kneighbors(P)
    rows = np.repeat(np.arange(n), k + 1)
    cols = idx.reshape(-1)
    keep = rows != cols
    edge_index = torch.as_tensor(np.stack([rows[keep], cols[keep]]), dtype=torch.long)
    edge_index = to_undirected(edge_index, num_nodes=n)
    edge_index, edge_weight = gcn_norm(edge_index, None, num_nodes=n, add_self_loops=True)
    return edge_index.numpy(), edge_weight.numpy().astype(np.float32)
