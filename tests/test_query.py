"""New cells mapped onto a trained model (scvi-tools' query pattern)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import read_dataset

torch.set_num_threads(1)


def _synthetic(n_cells: int = 360, n_genes: int = 120, k: int = 3, seed: int = 0):
    """Poisson counts of ``k`` well-separated groups; ``obs["group"]`` only for scoring."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    groups = rng.integers(0, k, n_cells)
    base = rng.gamma(2.0, 1.0, n_genes)
    mu = np.tile(base, (k, 1))
    for g in range(k):
        mu[g, g * 20 : (g + 1) * 20] *= 8.0
    lib = rng.uniform(0.7, 1.3, n_cells)[:, None]
    X = rng.poisson(mu[groups] * lib).astype(np.float32)
    a = ad.AnnData(
        X=X,
        obs=pd.DataFrame({"group": groups.astype(str)}, index=[f"c{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
    )
    return a


def _text_standin(adata, d: int = 8):
    """A per-cell semantic embedding computed the same way for any cell (fixed projection)."""
    X = np.log1p(1e4 * adata.X / adata.X.sum(1, keepdims=True))
    genes = np.array([int(g[1:]) for g in adata.var_names])
    R = np.random.default_rng(1).normal(size=(200, d)).astype(np.float32)[genes]
    Z = X @ R
    adata.obsm["X_gene_text"] = Z / np.linalg.norm(Z, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    import scllm_dsc as sd

    full = _synthetic()
    _text_standin(full)
    train = full[:300].copy()
    query = full[300:].copy()
    raw_train = train.copy()
    torch.manual_seed(0)
    sd.model.SCLLMDSC.setup_anndata(train, semantic_keys="X_gene_text", n_top_genes=60, n_pcs=10)
    model = sd.model.SCLLMDSC(train, n_clusters=3, n_latent=8, n_hidden=32)
    model.train(max_epochs=8, batch_size=64, random_state=0, enable_progress_bar=False)
    path = tmp_path_factory.mktemp("ref_model")
    model.save(path, overwrite=True, save_anndata=False)
    return model, path, raw_train, query


def test_query_pca_reproduces_training_pca(reference):
    """Training cells mapped as new cells land on their own PCA coordinates."""
    from scllm_dsc.model._query import query_pca

    model, _, raw_train, _ = reference
    ref = model.reference_
    n_pcs = ref["loadings"].shape[1]
    pca = query_pca(raw_train, None, ref)
    np.testing.assert_allclose(pca, ref["hops"][:, :n_pcs], atol=1e-4, rtol=1e-3)


def test_load_with_new_cells(reference):
    from sklearn.metrics import adjusted_rand_score

    import scllm_dsc as sd

    model, path, _, query = reference
    # genes in another order, one of them absent: matched by name
    shuffled = query[:, np.random.default_rng(0).permutation(query.n_vars)[1:]].copy()
    loaded = sd.model.SCLLMDSC.load(path, adata=shuffled)
    assert loaded.adata.n_obs == query.n_obs
    assert list(loaded.adata.obs_names) == list(query.obs_names)
    z = loaded.get_latent_representation()
    assert z.shape == (query.n_obs, model.module.n_fused)
    assert np.isfinite(z).all()
    labels = loaded.predict()
    assert labels.shape == (query.n_obs,)
    assert adjusted_rand_score(query.obs["group"], labels) >= 0.9
    # the reference model's clusters on its own cells match the groups the same way
    ref_labels = model.predict()
    assert adjusted_rand_score(model.adata.obs["group"], ref_labels) >= 0.9
    # the same query through the in-memory path: identical latent
    same = sd.model.SCLLMDSC.load_query_data(shuffled, model)
    np.testing.assert_allclose(same.get_latent_representation(), z, atol=1e-5)
    # a query cell's embedding does not depend on the other query cells
    part = sd.model.SCLLMDSC.load_query_data(shuffled[:10].copy(), model)
    np.testing.assert_allclose(part.get_latent_representation(), z[:10], atol=1e-5)


def test_query_errors(reference):
    import scllm_dsc as sd

    model, path, _, query = reference
    no_text = query.copy()
    del no_text.obsm["X_gene_text"]
    with pytest.raises(KeyError, match="X_gene_text"):
        sd.model.SCLLMDSC.load(path, adata=no_text)
    renamed = query.copy()
    renamed.var_names = [f"other{i}" for i in range(query.n_vars)]
    with pytest.raises(ValueError, match="cannot be mapped"):
        sd.model.SCLLMDSC.load_query_data(renamed, model)
    logged = query.copy()
    logged.X = np.log1p(logged.X) + 0.5
    with pytest.raises(ValueError, match="raw"):
        sd.model.SCLLMDSC.prepare_query_anndata(logged, model)


@pytest.mark.slow
@pytest.mark.shared
def test_zheng_holdout_agrees_with_all_cells(tmp_path):
    """Train on 80% of Zheng sorted PBMC, map the other 20%: their clusters agree with the
    clusters of a model trained on all cells (structural view; labels only to check k)."""
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score

    import scllm_dsc as sd

    full = read_dataset("Zheng_sortedPBMC_2140")
    k = full.obs["cell_type"].nunique()
    full.obs = full.obs[[]]
    # the model trained on the highly variable genes, as sd.tl.cluster does (label-free)
    tmp = full.copy()
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    sc.pp.highly_variable_genes(tmp, n_top_genes=2000, flavor="seurat")
    full = full[:, tmp.var["highly_variable"].to_numpy()].copy()
    rng = np.random.default_rng(0)
    test = np.zeros(full.n_obs, dtype=bool)
    test[rng.choice(full.n_obs, full.n_obs // 5, replace=False)] = True

    def fit(adata):
        torch.manual_seed(0)
        sd.model.SCLLMDSC.setup_anndata(adata, semantic_keys=None)
        m = sd.model.SCLLMDSC(adata, n_clusters=k)
        m.train(random_state=0, enable_progress_bar=False)
        return m

    everything = fit(full.copy())
    all_labels = everything.predict()[test]
    ref = fit(full[~test].copy())
    ref.save(tmp_path, overwrite=True, save_anndata=False)
    query = sd.model.SCLLMDSC.load(tmp_path, adata=full[test].copy())
    ari = adjusted_rand_score(all_labels, query.predict())
    print(f"held-out ARI vs all cells: {ari:.3f}")
    # measured 0.949 (benchmarks/query_agreement.py --hvg 2000); on all 8,863 genes two
    # all-cells trainings agree only at 0.874 with each other, so that setting cannot reach 0.9
    assert ari >= 0.9
