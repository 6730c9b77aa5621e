"""Leiden clustering of an embedding, at a given resolution or tuned to a number of clusters."""

from __future__ import annotations

import numpy as np


def _graph(z: np.ndarray, n_neighbors: int, random_state: int):
    import anndata as ad

    from ._build import neighbors

    tmp = ad.AnnData(np.zeros((z.shape[0], 0), dtype=np.float32))
    tmp.obsm["X_z"] = np.asarray(z, dtype=np.float32)
    neighbors(tmp, n_neighbors=n_neighbors, use_rep="X_z", random_state=random_state)
    return tmp


def _run(tmp, resolution: float, random_state: int) -> np.ndarray:
    import scanpy as sc

    sc.tl.leiden(
        tmp,
        resolution=resolution,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=random_state,
    )
    return tmp.obs["leiden"].astype(int).to_numpy()


def leiden_labels(
    z: np.ndarray, resolution: float = 1.0, n_neighbors: int = 15, random_state: int = 0
) -> np.ndarray:
    """Leiden labels (0..k-1) of the rows of ``z`` on their ``n_neighbors`` kNN graph."""
    return _run(_graph(z, n_neighbors, random_state), resolution, random_state)


def leiden_n_clusters(
    z: np.ndarray,
    n_clusters: int,
    n_neighbors: int = 15,
    random_state: int = 0,
    max_iter: int = 30,
) -> np.ndarray:
    """Leiden labels of the rows of ``z`` with the resolution bisected to ``n_clusters``.

    The resolution is doubled until Leiden finds at least ``n_clusters`` clusters, then
    bisected; the labelling closest to ``n_clusters`` (ties: the first found) is returned,
    so the result may differ from ``n_clusters`` when no resolution hits it exactly. Unlike
    k-means, Leiden does not favour equal-sized clusters, so rare populations survive.
    """
    return _bisect(_graph(z, n_neighbors, random_state), n_clusters, random_state, max_iter)


def _bisect(tmp, n_clusters: int, random_state: int, max_iter: int = 30) -> np.ndarray:
    """:func:`leiden_n_clusters` on a graph built by :func:`_graph`."""
    best, best_gap = None, np.inf

    def run(res):
        nonlocal best, best_gap
        lab = _run(tmp, res, random_state)
        n = int(lab.max()) + 1
        if abs(n - n_clusters) < best_gap:
            best, best_gap = lab, abs(n - n_clusters)
        return n

    lo, hi = 0.0, 1.0
    for _ in range(12):
        n = run(hi)
        if n >= n_clusters:
            break
        lo, hi = hi, hi * 2
    if best_gap == 0:
        return best
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        n = run(mid)
        if n == n_clusters:
            break
        if n < n_clusters:
            lo = mid
        else:
            hi = mid
    return best
