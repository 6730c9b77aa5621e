"""Build the sparse kNN cell graph of the structural view."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy import sparse

from .._utils import get_matrix, require_counts, to_csr

if TYPE_CHECKING:
    from anndata import AnnData


class CellGraph(NamedTuple):
    """A sparse cell graph and the expression PCA it was built from."""

    connectivities: sparse.csr_matrix
    """Symmetric UMAP-style connectivities (cells x cells, CSR)."""
    distances: sparse.csr_matrix
    """kNN distances (cells x cells, CSR, ``n_neighbors - 1`` entries per row)."""
    pca: np.ndarray
    """PCA of the log-normalised highly variable genes (cells x ``n_pcs``)."""
    highly_variable: np.ndarray
    """Boolean mask over genes: the genes the PCA used."""
    params: dict
    """Parameters, in the layout of ``adata.uns[key]["params"]`` of :func:`scanpy.pp.neighbors`."""
    gene_profiles: np.ndarray | None = None
    """Each highly variable gene's place in the PCA: loadings times the components' standard
    deviations (genes x ``n_pcs``); the input of :func:`~scllm_dsc.graph.gene_graph`."""
    pca_mean: np.ndarray | None = None
    """Mean log-normalised expression of the highly variable genes (the PCA's centre)."""
    pca_loadings: np.ndarray | None = None
    """PCA loadings (highly variable genes x ``n_pcs``): ``pca = (x - pca_mean) @ loadings``
    for the log-normalised expression ``x`` of a cell's highly variable genes."""


def knn_transformer(n_neighbors: int, random_state: int = 0):
    """A kNN transformer for :func:`scanpy.pp.neighbors` (``transformer=``) returning CSR.

    Approximate (pynndescent) search whose output is converted to ``scipy.sparse.csr_matrix``:
    scanpy 1.11's own pynndescent path hands back a ``csr_array`` that it then cannot read
    with scipy >= 1.15 (``'csr_array' object has no attribute 'getnnz'``) for more than 4096
    cells. Memory stays linear in the number of cells. The search uses
    ``scanpy.settings.n_jobs`` threads (1 by default).
    """
    import scanpy as sc
    from pynndescent import PyNNDescentTransformer
    from sklearn.base import BaseEstimator, TransformerMixin

    n_jobs = int(sc.settings.n_jobs or 1)

    class _CSRNNDescent(TransformerMixin, BaseEstimator):
        def __init__(self, n_neighbors: int = 15, random_state: int = 0):
            self.n_neighbors = n_neighbors
            self.random_state = random_state

        def _inner(self):
            return PyNNDescentTransformer(
                n_neighbors=self.n_neighbors, random_state=self.random_state, n_jobs=n_jobs
            )

        def fit(self, X, y=None):
            self.inner_ = self._inner().fit(X)
            return self

        def transform(self, X):
            return sparse.csr_matrix(self.inner_.transform(X))

        def fit_transform(self, X, y=None):
            self.inner_ = self._inner()
            return sparse.csr_matrix(self.inner_.fit_transform(X))

    return _CSRNNDescent(n_neighbors=n_neighbors, random_state=random_state)


# Exact (brute-force) kNN up to this many cells, pynndescent above. Brute force costs
# O(n^2 d) but needs no JIT compilation; pynndescent's first call in a process compiles
# for about 30 s on a 2-core machine, which exact search only exceeds near 100k cells
# (benchmarks/scale.py; docs/benchmarks.md).
EXACT_KNN_MAX_CELLS = 50_000


def neighbors(adata, n_neighbors: int, use_rep: str, random_state: int = 0, **kwargs) -> None:
    """:func:`scanpy.pp.neighbors` that works on any size (see :func:`knn_transformer`).

    Exact search (scikit-learn's brute force, scanpy's ``transformer="sklearn"``) up to
    :data:`EXACT_KNN_MAX_CELLS` cells, pynndescent above; in both cases
    ``obsp["distances"]`` holds the ``n_neighbors - 1`` nearest other cells per row, as
    scanpy's exact path does.
    """
    import scanpy as sc

    big = adata.n_obs > EXACT_KNN_MAX_CELLS
    transformer = knn_transformer(n_neighbors, random_state) if big else "sklearn"
    sc.pp.neighbors(
        adata,
        n_neighbors=n_neighbors,
        use_rep=use_rep,
        random_state=random_state,
        transformer=transformer,
        **kwargs,
    )
    if big:
        key = kwargs.get("key_added")
        dkey = f"{key}_distances" if key else "distances"
        adata.obsp[dkey] = _keep_nearest(adata.obsp[dkey], n_neighbors - 1)


def _keep_nearest(D, k: int) -> sparse.csr_matrix:
    """Drop self edges and keep the ``k`` smallest distances of each row (ties by column)."""
    D = sparse.coo_matrix(D)
    off = D.row != D.col
    rows, cols, vals = D.row[off], D.col[off], D.data[off]
    order = np.lexsort((cols, vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(D.shape[0]))
    rank = np.arange(rows.size) - starts[rows]
    keep = rank < k
    return sparse.csr_matrix(
        (vals[keep].astype(np.float32), (rows[keep], cols[keep])), shape=D.shape
    )


# Above this many cells the PCA is fitted on a random subsample of this size and all cells
# are projected onto it (ARPACK's time grows faster than linearly in the number of cells).
PCA_FIT_MAX_CELLS = 200_000


def _pca(tmp, n_comps: int, random_state: int) -> None:
    """:func:`scanpy.pp.pca` on ``tmp`` (in place), fitted on at most
    :data:`PCA_FIT_MAX_CELLS` cells drawn at random; the others are projected."""
    import scanpy as sc

    if tmp.n_obs <= PCA_FIT_MAX_CELLS:
        sc.pp.pca(tmp, n_comps=n_comps, random_state=random_state)
        return
    rng = np.random.default_rng(random_state)
    fit = np.sort(rng.choice(tmp.n_obs, PCA_FIT_MAX_CELLS, replace=False))
    sub = tmp[fit].copy()
    sc.pp.pca(sub, n_comps=n_comps, random_state=random_state)
    loadings = np.asarray(sub.varm["PCs"], dtype=np.float32)
    mean = np.asarray(sub.X.mean(0), dtype=np.float32).ravel()
    tmp.obsm["X_pca"] = np.asarray(tmp.X @ loadings, dtype=np.float32) - mean @ loadings
    tmp.varm["PCs"] = loadings
    tmp.uns["pca"] = {**sub.uns["pca"], "mean": mean}


def build_graph(
    adata: AnnData,
    layer: str | None = None,
    *,
    n_neighbors: int = 15,
    n_pcs: int = 50,
    n_top_genes: int = 2000,
    target_sum: float | None = 1e4,
    random_state: int = 0,
) -> CellGraph:
    """Sparse kNN cell graph from the PCA of log-normalised highly variable genes.

    The counts are library-size normalised and log1p transformed on a private copy; the
    highly variable genes are selected (Seurat flavour), the PCA computed (fitted on a random
    subsample of :data:`PCA_FIT_MAX_CELLS` cells above that size, all cells projected), and
    the kNN graph found with :func:`scanpy.pp.neighbors` (exact up to
    :data:`EXACT_KNN_MAX_CELLS` cells, pynndescent above). Nothing is
    written to ``adata``; memory is linear in the number of cells (no dense cells x cells).

    Parameters
    ----------
    adata
        Annotated data matrix with raw counts.
    layer
        Layer holding raw counts; ``None`` uses ``adata.X``.
    n_neighbors
        Number of nearest neighbours (the cell itself included, as in scanpy).
    n_pcs
        Number of principal components (capped by the data's size).
    n_top_genes
        Number of highly variable genes used for the PCA (all genes if fewer).
    target_sum
        Library size after normalisation.
    random_state
        Seed of the PCA solver and the neighbour search.

    Returns
    -------
    The :class:`CellGraph`.
    """
    import anndata as ad
    import scanpy as sc

    X = get_matrix(adata, layer)
    n_obs, n_vars = X.shape
    if n_obs < 3:
        raise ValueError(
            f"Need at least 3 cells to build a cell graph, got {n_obs}; clustering needs more "
            "cells."
        )
    if n_vars < 2:
        raise ValueError(f"Need at least 2 genes to build a cell graph, got {n_vars}.")
    require_counts(adata, layer, "The cell graph")
    X = to_csr(X, np.float32, copy=True)  # normalised in place below
    tmp = ad.AnnData(X)
    sc.pp.normalize_total(tmp, target_sum=target_sum)
    sc.pp.log1p(tmp)
    if n_top_genes is not None and n_top_genes < n_vars:
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor="seurat")
        hvg = tmp.var["highly_variable"].to_numpy().astype(bool)
        tmp = tmp[:, hvg].copy()
    else:
        hvg = np.ones(n_vars, dtype=bool)
    n_comps = int(min(n_pcs, tmp.n_obs - 1, tmp.n_vars - 1))
    _pca(tmp, n_comps, random_state)
    # the PCA's centre: stored by the subsample fit, else the mean of all cells
    pca_mean = tmp.uns["pca"].get("mean")
    if pca_mean is None:
        pca_mean = tmp.X.mean(0)
    k = int(min(n_neighbors, n_obs - 1))
    neighbors(tmp, n_neighbors=k, use_rep="X_pca", random_state=random_state)
    params = {
        "n_neighbors": k,
        "method": "umap",
        "random_state": random_state,
        "metric": "euclidean",
        "use_rep": "X_pca",
        "n_pcs": n_comps,
        "n_top_genes": int(hvg.sum()),
    }
    return CellGraph(
        sparse.csr_matrix(tmp.obsp["connectivities"], dtype=np.float32),
        sparse.csr_matrix(tmp.obsp["distances"], dtype=np.float32),
        np.asarray(tmp.obsm["X_pca"], dtype=np.float32),
        hvg,
        params,
        np.asarray(
            tmp.varm["PCs"] * np.sqrt(tmp.uns["pca"]["variance"])[None, :], dtype=np.float32
        ),
        np.asarray(pca_mean, dtype=np.float32).ravel(),
        np.asarray(tmp.varm["PCs"], dtype=np.float32),
    )


def neighbor_table(connectivities: sparse.spmatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-width neighbour table of a sparse graph: the ``k`` strongest edges per cell.

    Rows with fewer than ``k`` edges are padded with the cell itself at weight 0.

    Returns
    -------
    ``(indices, weights)``, each cells x ``k`` (int64, float32).
    """
    from .._utils import top_k_per_row

    C = sparse.csr_matrix(connectivities)
    n = C.shape[0]
    C = C - sparse.diags(C.diagonal())  # no self edges
    top = top_k_per_row(C, k)
    idx = np.repeat(np.arange(n, dtype=np.int64)[:, None], k, axis=1)
    w = np.zeros((n, k), dtype=np.float32)
    counts = np.diff(top.indptr)
    rows = np.repeat(np.arange(n), counts)
    pos = np.arange(top.indices.size) - top.indptr[rows]
    idx[rows, pos] = top.indices
    w[rows, pos] = top.values
    return idx, w
