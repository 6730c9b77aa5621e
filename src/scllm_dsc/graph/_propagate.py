"""SGC/SIGN-style low-pass propagation of cell features over the sparse graph."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .._docs import inject_docs


def normalized_adjacency(connectivities: sparse.spmatrix):
    """Symmetric-normalised adjacency with self loops, ``D^-1/2 (A + I) D^-1/2``.

    Computed with :func:`torch_geometric.nn.conv.gcn_conv.gcn_norm` on the sparse edge list
    (pure Python ops; no dense cells x cells). Returns a ``torch.sparse_coo_tensor``.
    """
    import torch
    from torch_geometric.nn.conv.gcn_conv import gcn_norm
    from torch_geometric.utils import from_scipy_sparse_matrix

    A = sparse.csr_matrix(connectivities, dtype=np.float32)
    A = A - sparse.diags(A.diagonal())
    A.eliminate_zeros()
    n = A.shape[0]
    edge_index, edge_weight = from_scipy_sparse_matrix(A)
    edge_index, edge_weight = gcn_norm(
        edge_index, edge_weight.float(), num_nodes=n, add_self_loops=True
    )
    return torch.sparse_coo_tensor(
        edge_index, edge_weight, (n, n), check_invariants=False
    ).coalesce()


def check_rows(features: np.ndarray, connectivities: sparse.spmatrix) -> None:
    """Raise unless ``features`` has one row per node of the graph."""
    if np.shape(features)[0] != connectivities.shape[0]:
        raise ValueError(
            f"`features` has {np.shape(features)[0]} rows but the graph has "
            f"{connectivities.shape[0]} nodes."
        )


def stack_hops(features: np.ndarray, apply, n_hops: int) -> np.ndarray:
    """``[X, op(X), ..., op^n_hops(X)]`` as one float32 array (SIGN-style features).

    ``apply`` maps a dense torch tensor (cells x features) to the operator applied to it.
    """
    import torch

    X = torch.as_tensor(np.asarray(features, dtype=np.float32))
    out, cur = [X], X
    with torch.no_grad():
        for _ in range(n_hops):
            cur = apply(cur)
            out.append(cur)
    return torch.cat(out, dim=1).numpy()


@inject_docs()
def propagate(
    features: np.ndarray, connectivities: sparse.spmatrix, n_hops: int = 2, adjacency=None
) -> np.ndarray:
    """Concatenate ``[X, ÂX, ..., Â^n_hops X]`` (SIGN features) over the cell graph.

    Parameters
    ----------
    {graph_inputs}
    n_hops
        Number of propagation steps.
    {adjacency}

    Returns
    -------
    Cells x ``features * (n_hops + 1)`` float32 array. Memory is linear in the number of cells.

    Notes
    -----
    Not :class:`torch_geometric.transforms.SIGN`: that one normalises without self-loops and
    stores each hop on a ``Data`` object; here ``Â`` has self-loops (GCN normalisation, via
    PyG's ``gcn_norm``) and the hops come back stacked, as the model registers them.
    """
    import torch

    check_rows(features, connectivities)
    A = normalized_adjacency(connectivities) if adjacency is None else adjacency
    return stack_hops(features, lambda M: torch.sparse.mm(A, M), n_hops)
