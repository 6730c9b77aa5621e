"""Sparse cell graph and graph propagation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic
from scipy import sparse


@pytest.fixture(scope="module")
def small():
    a = synthetic(300, 480)
    return a


def test_build_graph_sparse_and_linear(small):
    import scllm_dsc as sd

    X_before = small.X.copy()
    g = sd.graph.build_graph(small, n_neighbors=10, n_pcs=20, n_top_genes=300)
    n = small.n_obs
    assert sparse.issparse(g.connectivities) and sparse.issparse(g.distances)
    assert g.connectivities.shape == (n, n)
    # kNN distances: exactly k-1 entries per row; connectivities symmetric, O(n k)
    assert np.all(np.diff(g.distances.indptr) == 9)
    assert g.connectivities.nnz <= 2 * n * 10
    assert abs(g.connectivities - g.connectivities.T).max() < 1e-6
    assert g.pca.shape == (n, 20)
    assert g.highly_variable.sum() == 300
    assert (small.X != X_before).nnz == 0  # input untouched
    assert not small.obsp and "X_pca" not in small.obsm


def test_build_graph_rejects_non_counts(small):
    import scllm_dsc as sd

    b = small.copy()
    b.X = b.X * 0.5
    with pytest.raises(ValueError, match="raw counts"):
        sd.graph.build_graph(b)


def test_propagate_matches_dense_formula():
    import scllm_dsc as sd

    rng = np.random.default_rng(0)
    A = sparse.random(30, 30, density=0.2, random_state=0, format="csr")
    A = A + A.T
    X = rng.normal(size=(30, 4)).astype(np.float32)
    out = sd.graph.propagate(X, A, n_hops=2)
    assert out.shape == (30, 12)
    Ad = A.toarray()
    np.fill_diagonal(Ad, 0)
    Ad = Ad + np.eye(30)
    d = Ad.sum(1)
    Ahat = Ad / np.sqrt(d[:, None] * d[None, :])
    np.testing.assert_allclose(out[:, :4], X, atol=1e-6)
    np.testing.assert_allclose(out[:, 4:8], Ahat @ X, atol=1e-4)
    np.testing.assert_allclose(out[:, 8:], Ahat @ Ahat @ X, atol=1e-4)


def test_neighbor_table_pads_with_self():
    import scllm_dsc as sd

    A = sparse.csr_matrix(np.array([[0, 2, 1], [2, 0, 0], [1, 0, 0]], dtype=np.float32))
    idx, w = sd.graph.neighbor_table(A, 2)
    np.testing.assert_array_equal(idx[0], [1, 2])
    np.testing.assert_allclose(w[0], [2, 1])
    assert idx[1, 0] == 0 and idx[1, 1] == 1 and w[1, 1] == 0


def test_knn_transformer_returns_csr_matrix():
    """scanpy's own pynndescent path fails above 4096 cells with scipy >= 1.15."""
    import anndata as ad
    import scanpy as sc

    import scllm_dsc as sd

    X = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32)
    D = sd.graph.knn_transformer(10, 0).fit_transform(X)
    assert isinstance(D, sparse.csr_matrix) and D.shape == (200, 200)
    a = ad.AnnData(np.zeros((200, 0), dtype=np.float32))
    a.obsm["z"] = X
    sc.pp.neighbors(a, use_rep="z", n_neighbors=10, transformer=sd.graph.knn_transformer(10, 0))
    assert a.obsp["connectivities"].nnz > 0
    from scllm_dsc.graph._build import _keep_nearest

    K = _keep_nearest(a.obsp["distances"], 9)
    assert np.all(np.diff(K.indptr) == 9) and np.all(K.diagonal() == 0)
    exact = sparse.csr_matrix(sc.pp.neighbors(a, use_rep="z", n_neighbors=10, copy=True)
                              .obsp["distances"])
    # approximate search on 200 points finds (nearly) the exact neighbours
    overlap = (K.multiply(exact) > 0).sum() / exact.nnz
    assert overlap > 0.95


@pytest.mark.parametrize("exact_max", [10_000, 100])
def test_neighbors_exact_and_approximate_paths_share_layout(monkeypatch, exact_max):
    """Exact search up to EXACT_KNN_MAX_CELLS, pynndescent above: same distances layout
    (n_neighbors - 1 other cells per row, no self edges) and (nearly) the same neighbours."""
    import anndata as ad

    from scllm_dsc.graph import _build

    X = np.random.default_rng(1).normal(size=(400, 8)).astype(np.float32)
    a = ad.AnnData(np.zeros((400, 0), dtype=np.float32))
    a.obsm["z"] = X
    monkeypatch.setattr(_build, "EXACT_KNN_MAX_CELLS", exact_max)
    _build.neighbors(a, n_neighbors=10, use_rep="z")
    D = sparse.csr_matrix(a.obsp["distances"])
    assert np.all(np.diff(D.indptr) == 9) and np.all(D.diagonal() == 0)
    C = a.obsp["connectivities"]
    assert abs(C - C.T).max() < 1e-6
    from sklearn.neighbors import NearestNeighbors

    _, idx = NearestNeighbors(n_neighbors=10).fit(X).kneighbors(X)
    truth = sparse.csr_matrix((np.ones(400 * 9), (np.repeat(np.arange(400), 9),
                                                  idx[:, 1:].ravel())), shape=(400, 400))
    overlap = (D.multiply(truth) > 0).sum() / truth.nnz
    assert overlap == 1.0 if exact_max > 400 else overlap > 0.95


def test_pca_fitted_on_a_subsample_projects_all_cells(monkeypatch, small):
    """Above PCA_FIT_MAX_CELLS the PCA is fitted on a subsample; every cell is projected with
    the stored centre and loadings (the formula query mapping relies on)."""
    from scllm_dsc.graph import _build

    monkeypatch.setattr(_build, "PCA_FIT_MAX_CELLS", 200)
    g = _build.build_graph(small, n_neighbors=10, n_pcs=10, n_top_genes=200)
    assert g.pca.shape == (small.n_obs, 10)
    # library size over all genes, as build_graph normalises before selecting genes
    tot = np.asarray(small.X.sum(1)).ravel()
    hv = sparse.csr_matrix(small.X)[:, g.highly_variable].toarray()
    xh = np.log1p(hv * (1e4 / tot)[:, None])
    np.testing.assert_allclose(g.pca, (xh - g.pca_mean) @ g.pca_loadings, atol=1e-3)
    monkeypatch.setattr(_build, "PCA_FIT_MAX_CELLS", 10**9)
    ref = _build.build_graph(small, n_neighbors=10, n_pcs=10, n_top_genes=200)
    # the leading components of a 200-cell fit span nearly the same space as the full fit
    cos = np.abs((g.pca_loadings[:, :3] * ref.pca_loadings[:, :3]).sum(0))
    assert cos.min() > 0.9
