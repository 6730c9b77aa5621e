"""Over-cluster, then merge: a partition that does not split large types, at a given or an
estimated number of clusters.

A Leiden over-clustering of the cell graph is merged greedily. Candidate pairs are each
cluster and its most connected clusters (inter-cluster edge weight over the square root of
the clusters' volumes). The most connected candidate pair that fewer than ``min_markers``
marker genes tell apart is merged first (marker: a gene whose mean log expression differs
by at least ``min_lfc`` with a Welch statistic of at least ``min_t``); pairs with markers are
merged only when a given number of clusters requires it. Statistics of a merged cluster are
updated from per-cluster sums. With ``n_clusters=None`` merging stops when every candidate
pair has at least ``min_markers`` markers: two connected clusters stay apart only if some
genes tell them apart, the idea of marker-based cluster validation (sc-SHC, CHOIR) in a
cheap deterministic form (no null distribution is simulated).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def _indicator(labels: np.ndarray, k: int) -> sparse.csr_matrix:
    """Clusters x cells 0/1 membership matrix of ``labels`` (integers 0..k-1)."""
    return sparse.csr_matrix(
        (np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(k, len(labels))
    )


def cluster_weights(labels: np.ndarray, connectivities, k: int) -> np.ndarray:
    """Clusters x clusters sums of the cell graph's edge weights (dense)."""
    ind = _indicator(labels, k)
    return np.asarray((ind @ sparse.csr_matrix(connectivities) @ ind.T).todense(),
                      dtype=np.float64)


def cluster_affinity(C: np.ndarray) -> np.ndarray:
    """Inter-cluster weight over the square root of the two clusters' volumes; the diagonal
    is -1 so that a cluster is never its own most connected neighbour."""
    vol = C.sum(1)
    A = C / np.sqrt(np.outer(vol, vol) + 1e-12)
    np.fill_diagonal(A, -1)
    return A


def _cluster_sums(X, labels: np.ndarray, k: int):
    """Per-cluster cell counts, sums and sums of squares of the rows of ``X`` (cells x genes)."""
    ind = _indicator(labels, k)
    X2 = X.multiply(X) if sparse.issparse(X) else np.asarray(X) ** 2
    X0 = (X != 0).astype(np.float64)
    s1, s2, s0 = (np.asarray(sparse.csr_matrix(ind @ M).toarray() if sparse.issparse(M)
                             else ind @ M, dtype=np.float64) for M in (X, X2, X0))
    return np.bincount(labels, minlength=k).astype(np.float64), s1, s2, s0


def _n_markers(n, s1, s2, s0, i: int, j: int, min_lfc: float, min_t: float,
               min_pct: float = 0.0) -> int:
    mi, mj = s1[i] / n[i], s1[j] / n[j]
    vi = np.maximum(s2[i] / n[i] - mi**2, 0) * n[i] / max(n[i] - 1, 1)
    vj = np.maximum(s2[j] / n[j] - mj**2, 0) * n[j] / max(n[j] - 1, 1)
    d = mi - mj
    t = np.abs(d) / np.sqrt(vi / n[i] + vj / n[j] + 1e-12)
    ok = (np.abs(d) >= min_lfc) & (t >= min_t)
    if min_pct > 0:
        ok &= np.abs(s0[i] / n[i] - s0[j] / n[j]) >= min_pct
    return int(ok.sum())


def merge_clusters(
    labels: np.ndarray,
    connectivities,
    X,
    n_clusters: int | None = None,
    *,
    min_markers: int = 10,
    min_lfc: float = 1.0,
    min_t: float = 5.0,
    min_pct: float = 0.0,
    n_candidates: int = 3,
    order: str = "connectivity",
    min_clusters: int = 1,
    return_history: bool = False,
):
    """Merge the clusters of ``labels`` greedily on the cell graph.

    Parameters
    ----------
    labels
        Initial (over-)clustering, integers 0..k-1.
    connectivities
        Cells x cells graph weights (e.g. ``obsp["connectivities"]``).
    X
        Cells x genes log-normalised expression (dense or sparse) for the marker counts.
    n_clusters
        Merge until this many clusters remain; ``None``: until every pair of joined clusters
        has at least ``min_markers`` markers.
    min_markers, min_lfc, min_t
        The stopping rule and the marker definition (see the module docstring).
    order
        ``"connectivity"``: the most connected candidate pair with fewer than
        ``min_markers`` markers first (then the rest, most connected first); ``"markers"``:
        the candidate pair with the fewest markers first.
    min_clusters
        With ``n_clusters=None``: never merge below this many clusters.
    n_candidates
        Pairs considered: each cluster with its ``n_candidates`` most connected clusters
        (inter-cluster edge weight / sqrt of the product of the clusters' volumes).
    return_history
        Also return the list of ``(n_clusters_before, n_markers_of_merged_pair)``.

    Returns
    -------
    Labels 0..k'-1 (by decreasing size), and the history with ``return_history=True``.
    """
    labels = np.asarray(labels)
    _, labels = np.unique(labels, return_inverse=True)
    k = int(labels.max()) + 1
    X = sparse.csr_matrix(X) if sparse.issparse(X) else np.asarray(X)
    n, s1, s2, s0 = _cluster_sums(X, labels, k)
    C = cluster_weights(labels, connectivities, k)
    parent = np.arange(k)
    alive = np.ones(k, dtype=bool)
    cache: dict[tuple[int, int], int] = {}
    history = []
    target = max(int(min_clusters), 1) if n_clusters is None else int(n_clusters)
    while alive.sum() > target:
        idx = np.flatnonzero(alive)
        A = cluster_affinity(C[np.ix_(idx, idx)])  # merged-away columns are zero
        pairs = set()
        for a in range(len(idx)):
            for b in np.argsort(-A[a])[:n_candidates]:
                if A[a, b] > 0:
                    pairs.add((int(idx[min(a, b)]), int(idx[max(a, b)])))
        if not pairs:  # disconnected components: fall back to all pairs
            pairs = {(int(a), int(b)) for ai, a in enumerate(idx) for b in idx[ai + 1:]}
        best, best_key = None, None
        for i, j in pairs:
            if (i, j) not in cache:
                cache[(i, j)] = _n_markers(n, s1, s2, s0, i, j, min_lfc, min_t, min_pct)
            conn = -C[i, j] / np.sqrt(C[i].sum() * C[j].sum() + 1e-12)
            key = (cache[(i, j)], conn) if order == "markers" else (
                int(cache[(i, j)] >= min_markers), conn)
            if best_key is None or key < best_key:
                best, best_key = (i, j), key
        if n_clusters is None and cache[best] >= min_markers:
            break
        i, j = best
        history.append((int(alive.sum()), int(cache[best])))
        for a in (n, s1, s2, s0):
            a[i] += a[j]
        C[i] += C[j]
        C[:, i] += C[:, j]
        C[j] = 0
        C[:, j] = 0
        alive[j] = False
        parent[parent == j] = i
        cache = {p: v for p, v in cache.items() if i not in p and j not in p}
    out = parent[labels]
    _, out = np.unique(out, return_inverse=True)
    sizes = np.bincount(out)
    rank = np.empty_like(sizes)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(len(sizes))
    out = rank[out]
    return (out, history) if return_history else out


def separation(labels: np.ndarray, connectivities, X, *, min_markers: int = 10,
               min_lfc: float = 1.0, min_t: float = 5.0) -> tuple[int, int]:
    """How well every cluster is told apart from its most connected neighbour.

    For each cluster of ``labels``, the marker genes (as in :func:`merge_clusters`) between
    it and the cluster it shares most edge weight with (over the square root of the volumes).

    Returns
    -------
    The smallest of these marker counts and the number of clusters with fewer than
    ``min_markers`` ("weak" clusters: a split that no genes support).
    """
    _, labels = np.unique(np.asarray(labels), return_inverse=True)
    k = int(labels.max()) + 1
    if k < 2:
        return 0, 1
    X = sparse.csr_matrix(X) if sparse.issparse(X) else np.asarray(X)
    n, s1, s2, s0 = _cluster_sums(X, labels, k)
    A = cluster_affinity(cluster_weights(labels, connectivities, k))
    m = np.array([_n_markers(n, s1, s2, s0, a, int(np.argmax(A[a])), min_lfc, min_t)
                  for a in range(k)])
    return int(m.min()), int((m < min_markers).sum())


def log_normalize(X, target_sum: float | None = None):
    """``log1p`` of counts scaled to ``target_sum`` per cell (``None``: the median total, as
    ``sc.pp.normalize_total``; this keeps the marker threshold independent of how many genes
    ``X`` holds). Sparse stays sparse."""
    X = sparse.csr_matrix(X, dtype=np.float32) if sparse.issparse(X) else np.asarray(
        X, dtype=np.float32)
    tot = np.asarray(X.sum(1)).ravel()
    if target_sum is None:
        target_sum = float(np.median(tot[tot > 0])) if (tot > 0).any() else 1.0
    scale = np.divide(target_sum, tot, out=np.zeros_like(tot), where=tot > 0)
    if sparse.issparse(X):
        X = sparse.csr_matrix(sparse.diags(scale) @ X)
        X.data = np.log1p(X.data)
        return X
    return np.log1p(X * scale[:, None])


def overcluster_merge(
    z: np.ndarray,
    X,
    n_clusters: int | None = None,
    *,
    over: float = 3.0,
    resolution: float = 3.0,
    n_neighbors: int = 15,
    random_state: int = 0,
    **merge_kwargs,
) -> np.ndarray:
    """Leiden over-clustering of the rows of ``z`` merged by :func:`merge_clusters`.

    Parameters
    ----------
    z
        Cells x dimensions embedding; the kNN graph (``n_neighbors``) is built on it.
    X
        Cells x genes counts (log-normalised here) for the marker counts.
    n_clusters
        Target number of clusters: the over-clustering has about ``over * n_clusters``
        clusters (Leiden resolution bisected). ``None``: Leiden at ``resolution``, merged
        until every joined pair is told apart by markers, but not below two clusters
        (``min_clusters``).
    **merge_kwargs
        Passed to :func:`merge_clusters`.
    """
    from ._leiden import _graph

    return _overcluster_merge(_graph(z, n_neighbors, random_state), log_normalize(X),
                              n_clusters, over=over, resolution=resolution,
                              random_state=random_state, **merge_kwargs)


def _overcluster_merge(tmp, Xl, n_clusters: int | None, *, over: float = 3.0,
                       resolution: float = 3.0, random_state: int = 0, **merge_kwargs):
    """:func:`overcluster_merge` on a graph built by ``graph._leiden._graph`` and
    log-normalised counts (for callers that use both again)."""
    from ._leiden import _bisect, _run

    if n_clusters is None:
        start = _run(tmp, resolution, random_state)
    else:
        start = _bisect(tmp, max(int(round(over * n_clusters)), n_clusters), random_state)
        if int(start.max()) + 1 < n_clusters:  # too few clusters at any resolution
            return start
    merge_kwargs.setdefault("min_clusters", 2)
    return merge_clusters(start, tmp.obsp["connectivities"], Xl, n_clusters, **merge_kwargs)
