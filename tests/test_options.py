"""The related methods as options of ``sd.tl.cluster``: Siamese augmentation (scSiameseClu)
and gene-graph refinement (scRCL); their sparse graph helpers and losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse
from test_cluster import FAST

torch.set_num_threads(1)


def _dense_ahat(A):
    Ad = A.toarray()
    np.fill_diagonal(Ad, 0)
    Ad = Ad + np.eye(A.shape[0])
    d = Ad.sum(1)
    return Ad / np.sqrt(d[:, None] * d[None, :])


@pytest.fixture(scope="module")
def graph():
    A = sparse.random(40, 40, density=0.2, random_state=1, format="csr", dtype=np.float32)
    return sparse.csr_matrix(A + A.T)


def test_drop_weak_edges_removes_the_weakest_symmetrically(graph):
    import scllm_dsc as sd

    D = sd.graph.drop_weak_edges(graph, 0.1)
    assert abs(D - D.T).max() == 0
    assert D.diagonal().sum() == 0
    off = sparse.csr_matrix(graph)
    off.setdiag(0)
    off.eliminate_zeros()
    kept, all_w = D.data, off.data
    assert 0.8 * all_w.size <= kept.size < all_w.size
    assert kept.min() > np.quantile(all_w, 0.1) - 1e-7  # only weak edges went
    with pytest.raises(ValueError, match="fraction"):
        sd.graph.drop_weak_edges(graph, 1.0)


def test_ppr_propagate_matches_dense_formula(graph):
    import scllm_dsc as sd

    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    out = sd.graph.ppr_propagate(X, graph, n_hops=2, alpha=0.2, n_iter=6)
    Ahat = _dense_ahat(graph)
    P = sum(0.2 * 0.8**t * np.linalg.matrix_power(Ahat, t) for t in range(7))
    assert out.shape == (40, 9)
    np.testing.assert_allclose(out[:, :3], X, atol=1e-6)
    np.testing.assert_allclose(out[:, 3:6], P @ X, atol=1e-4)
    np.testing.assert_allclose(out[:, 6:], P @ P @ X, atol=1e-4)


def test_gene_graph_is_symmetric_normalised_knn():
    import scllm_dsc as sd

    rng = np.random.default_rng(0)
    profiles = np.vstack([rng.normal(0, 0.1, (10, 5)) + 1, rng.normal(0, 0.1, (10, 5)) - 1])
    ei, ew = sd.graph.gene_graph(profiles, n_neighbors=3)
    n = profiles.shape[0]
    A = sparse.csr_matrix((ew, (ei[0], ei[1])), shape=(n, n)).toarray()
    np.testing.assert_allclose(A, A.T, atol=1e-6)
    assert np.all(np.diag(A) > 0)  # self loops
    off = A - np.diag(np.diag(A))
    # neighbours stay within each group of similar genes
    assert off[:10, 10:].sum() == 0 and off[10:, :10].sum() == 0
    assert ((off > 0).sum(1) >= 3).all()
    with pytest.raises(ValueError, match="2 genes"):
        sd.graph.gene_graph(profiles[:1])


def test_cross_view_and_neighbour_losses():
    from scllm_dsc.nn import cross_view_correlation, neighbour_infonce

    torch.manual_seed(0)
    a = torch.randn(256, 8)
    same = cross_view_correlation(a, a + 0.01 * torch.randn(256, 8)).item()
    unrelated = cross_view_correlation(a, torch.randn(256, 8)).item()
    assert same < 0.01 < 0.5 < unrelated
    # decorrelated dimensions are preferred to redundant ones
    redundant = a[:, :1].repeat(1, 8)
    assert cross_view_correlation(redundant, redundant).item() > 10 * same
    z = torch.nn.functional.normalize(torch.randn(16, 4), dim=-1)
    close = torch.nn.functional.normalize(z.unsqueeze(1) + 0.01 * torch.randn(16, 3, 4), dim=-1)
    far = torch.nn.functional.normalize(torch.randn(16, 3, 4), dim=-1)
    mask = torch.ones(16, 3, dtype=torch.bool)
    assert neighbour_infonce(z, close, mask) < neighbour_infonce(z, far, mask)
    # padded neighbours do not count
    assert neighbour_infonce(z, far, torch.zeros(16, 3, dtype=torch.bool)).item() == 0.0


@pytest.fixture(scope="module")
def adata():
    from conftest import synthetic
    from test_model import _semantic_standin

    a = synthetic(300, 480)
    del a.obs["cell_type"]
    _semantic_standin(a)
    G = np.random.default_rng(0).normal(size=(a.n_vars, 24)).astype(np.float32)
    a.varm["gene_text"] = G / np.linalg.norm(G, axis=1, keepdims=True)
    return a


@pytest.mark.parametrize(
    "opts, term",
    [({"augment": True}, "siamese_train"), ({"gene_graph": True}, "neighbour_train")],
)
def test_cluster_options(adata, opts, term, tmp_path):
    import scllm_dsc as sd

    a, b = adata.copy(), adata.copy()
    model = sd.tl.cluster(a, n_clusters=3, random_state=0, return_model=True, **opts, **FAST)
    sd.tl.cluster(b, n_clusters=3, random_state=0, **opts, **FAST)
    # same seed, same result
    np.testing.assert_array_equal(a.obs["scllm_dsc"], b.obs["scllm_dsc"])
    np.testing.assert_array_equal(a.obsm["X_scllm_dsc"], b.obsm["X_scllm_dsc"])
    params = a.uns["scllm_dsc"]["params"]
    assert params[next(iter(opts))] is True
    hist = a.uns["scllm_dsc"]["history"][term]
    assert np.all(np.isfinite(hist)) and hist.max() > 0
    # the private model inputs stay on the model's AnnData, not on the user's
    assert not any(k.startswith("_scllm_dsc") for k in [*a.obsm, *a.uns])
    model.save(tmp_path / "m", overwrite=True)
    loaded = sd.model.SCLLMDSC.load(tmp_path / "m", adata=model.adata)
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6
    )


def test_gene_graph_uses_text_embeddings(adata):
    import scllm_dsc as sd

    a = adata.copy()
    sd.model.SCLLMDSC.setup_anndata(a, gene_graph=True, n_top_genes=300, n_pcs=20)
    with_text = sd.model.SCLLMDSC(a, n_clusters=3, n_latent=8, n_hidden=16)
    without = sd.model.SCLLMDSC(a, n_clusters=3, n_latent=8, n_hidden=16, gene_text_init=False)
    n_genes = with_text.module.gene_index.numel()
    assert n_genes == 300 == a.uns["_scllm_dsc_gene_graph"]["profiles"].shape[0]
    assert without.module.gene_features.shape == (n_genes, 20)
    assert with_text.module.gene_features.shape == (n_genes, 20 + 24)
