"""Graph views for the Siamese augmentation (scSiameseClu ideas), all sparse."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .._docs import inject_docs


def drop_weak_edges(connectivities: sparse.spmatrix, fraction: float = 0.1) -> sparse.csr_matrix:
    """Remove the ``fraction`` of edges with the lowest weight (the least similar pairs).

    The graph stays symmetric (an edge and its reverse share their weight and go together);
    self loops are dropped. Memory is linear in the number of edges.

    Parameters
    ----------
    connectivities
        Sparse symmetric cells x cells graph.
    fraction
        Share of the (off-diagonal) edges to drop, in ``[0, 1)``.

    Returns
    -------
    The thinned graph (CSR, float32).
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"`fraction` must be in [0, 1), got {fraction}.")
    C = sparse.csr_matrix(connectivities, dtype=np.float32, copy=True)
    C.setdiag(0)
    C.eliminate_zeros()
    if fraction == 0 or C.nnz == 0:
        return C
    threshold = np.quantile(C.data, fraction)
    C.data[C.data <= threshold] = 0
    C.eliminate_zeros()
    return C


@inject_docs()
def ppr_propagate(
    features: np.ndarray,
    connectivities: sparse.spmatrix,
    n_hops: int = 2,
    alpha: float = 0.15,
    n_iter: int = 10,
    adjacency=None,
) -> np.ndarray:
    """SIGN-shaped features over the personalised-PageRank diffusion of the graph.

    ``[X, PX, ..., P^n_hops X]`` with ``P = alpha sum_t (1 - alpha)^t Â^t`` (truncated after
    ``n_iter`` terms) and ``Â`` the normalised adjacency of
    :func:`~scllm_dsc.graph.normalized_adjacency`. The diffusion matrix is never formed: each
    application is ``n_iter`` sparse products, so memory stays linear in the number of cells.
    The output has the width of :func:`~scllm_dsc.graph.propagate`'s, so both views can share
    one encoder. (Not :class:`torch_geometric.transforms.GDC`: it forms the diffusion matrix,
    dense or top-k sparsified, which is what this avoids.)

    Parameters
    ----------
    {graph_inputs}
    n_hops
        Number of diffusion steps.
    alpha
        Teleport (restart) probability, in ``(0, 1]``.
    n_iter
        Terms of the truncated series.
    {adjacency}

    Returns
    -------
    Cells x ``features * (n_hops + 1)`` float32 array.
    """
    import torch

    from ._propagate import check_rows, normalized_adjacency, stack_hops

    check_rows(features, connectivities)
    if not 0 < alpha <= 1:
        raise ValueError(f"`alpha` must be in (0, 1], got {alpha}.")
    A = normalized_adjacency(connectivities) if adjacency is None else adjacency

    def ppr(M):
        out, cur = alpha * M, M
        for t in range(1, n_iter + 1):
            cur = torch.sparse.mm(A, cur)
            out = out + alpha * (1 - alpha) ** t * cur
        return out

    return stack_hops(features, ppr, n_hops)
