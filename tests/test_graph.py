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
