"""``sd.tl.cluster``: keys, shapes, determinism, options, input safety."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import synthetic
from scipy import sparse
from test_model import _semantic_standin

torch.set_num_threads(1)

FAST = dict(n_top_genes=300, n_pcs=20, n_latent=8, max_epochs=4, batch_size=128,
            model_kwargs={"n_hidden": 32}, train_kwargs={"enable_progress_bar": False})


@pytest.fixture(scope="module")
def adata():
    a = synthetic(400, 480)
    del a.obs["cell_type"]
    _semantic_standin(a)
    a.layers["counts"] = a.X.copy()
    return a


@pytest.fixture(scope="module")
def clustered(adata):
    import scllm_dsc as sd

    a = adata.copy()
    sd.tl.cluster(a, n_clusters=4, random_state=0, **FAST)
    return a


def test_outputs(clustered, adata):
    import scanpy as sc

    a = clustered
    n = a.n_obs
    C, D = a.obsp["scllm_dsc_connectivities"], a.obsp["scllm_dsc_distances"]
    assert sparse.issparse(C) and sparse.issparse(D)
    assert D.nnz == n * 14 and C.nnz <= 2 * n * 15
    assert a.obsm["X_scllm_dsc"].shape == (n, 16)
    lab = a.obs["scllm_dsc"]
    assert lab.dtype == "category"
    assert list(lab.cat.categories) == [str(i) for i in range(len(lab.cat.categories))]
    P = a.obsm["scllm_dsc_proba"]
    assert P.shape == (n, 4)
    np.testing.assert_allclose(P.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(P.argmax(1).astype(str), lab.to_numpy())
    # cluster 0 is the largest
    sizes = lab.value_counts()
    assert sizes["0"] == sizes.max()
    g = a.uns["scllm_dsc_neighbors"]  # scanpy's neighbors layout, apart from the parameters
    assert g["connectivities_key"] == "scllm_dsc_connectivities"
    assert g["distances_key"] == "scllm_dsc_distances"
    assert g["params"]["n_neighbors"] == 15
    u = a.uns["scllm_dsc"]
    assert "connectivities_key" not in u and set(u) == {"params", "history", "timings"}
    assert u["params"]["n_neighbors"] == 15 and u["params"]["use_semantic"]
    assert u["params"]["semantic_paths"] == ["path1", "path2"]
    assert "recon_train" in u["history"] and len(u["history"]["recon_train"]) == 4
    # input untouched apart from documented keys
    assert (a.X != adata.X).nnz == 0
    assert set(a.obsm) - set(adata.obsm) == {
        "X_scllm_dsc",
        "scllm_dsc_proba",
        "X_scllm_dsc_semantic",
        "X_scllm_dsc_structural",
    }
    assert a.obsm["X_scllm_dsc_semantic"].shape == a.obsm["X_scllm_dsc_structural"].shape
    np.testing.assert_allclose(np.linalg.norm(a.obsm["X_scllm_dsc_semantic"], axis=1), 1, atol=1e-4)
    assert set(a.obs.columns) - set(adata.obs.columns) == {"scllm_dsc"}
    # scanpy works on the latent and on the graph
    sc.pp.neighbors(a, use_rep="X_scllm_dsc", key_added="lat")
    sc.tl.umap(a, neighbors_key="lat")
    assert a.obsm["X_umap"].shape == (n, 2)
    sc.tl.leiden(a, neighbors_key="scllm_dsc_neighbors", flavor="igraph", n_iterations=2)


def test_deterministic(clustered, adata):
    import scllm_dsc as sd

    b = adata.copy()
    sd.tl.cluster(b, n_clusters=4, random_state=0, **FAST)
    np.testing.assert_array_equal(b.obs["scllm_dsc"], clustered.obs["scllm_dsc"])
    np.testing.assert_allclose(b.obsm["X_scllm_dsc"], clustered.obsm["X_scllm_dsc"])


def test_structural_only_layer_copy_nclusters_none(adata):
    import scllm_dsc as sd

    a = adata.copy()
    a.X = a.X * 0.5  # not counts: must use the layer
    with pytest.raises(ValueError, match="counts"):
        sd.tl.cluster(a, n_clusters=3, use_semantic=False, **FAST)
    out = sd.tl.cluster(a, n_clusters=None, use_semantic=False, layer="counts", copy=True,
                        key_added="s", **FAST)
    assert "s" not in a.obs and out.obsm["X_s"].shape == (a.n_obs, 8)
    k = out.uns["s"]["params"]["n_clusters"]
    assert k >= 2 and out.obsm["s_proba"].shape == (a.n_obs, k)
    assert not out.uns["s"]["params"]["use_semantic"]


def test_missing_semantic_names_the_call(adata, monkeypatch):
    import scllm_dsc as sd
    import scllm_dsc.tl

    def failing(*args, **kwargs):
        raise OSError("no text model here")

    monkeypatch.setattr(scllm_dsc.tl, "embed_genes", failing)
    a = adata.copy()
    del a.obsm["X_gene_text"]
    with pytest.raises(RuntimeError, match=r"sd\.tl\.embed_genes\(adata\)"):
        sd.tl.cluster(a, n_clusters=3, **FAST)
    assert "scllm_dsc" not in a.obs and "X_gene_text" not in a.obsm


def test_path2_never_computed_unasked(adata, monkeypatch):
    """Without X_cell_sentence, cluster runs on Path 1 only and records it."""
    import scllm_dsc as sd
    import scllm_dsc.tl

    def forbidden(*args, **kwargs):
        raise AssertionError("sd.tl.cell_sentences must not run inside sd.tl.cluster")

    monkeypatch.setattr(scllm_dsc.tl, "cell_sentences", forbidden)
    a = adata.copy()
    del a.obsm["X_cell_sentence"]
    sd.tl.cluster(a, n_clusters=3, **FAST)
    p = a.uns["scllm_dsc"]["params"]
    assert p["semantic_keys"] == ["X_gene_text"] and p["semantic_paths"] == ["path1"]
    assert "X_cell_sentence" not in a.obsm and "cell_sentence" not in a.obs
    # Path 2 alone cannot be honoured without its embedding: a clear error
    b = adata.copy()
    del b.obsm["X_cell_sentence"]
    with pytest.raises(ValueError, match=r"sd\.tl\.cell_sentences\(adata\)"):
        sd.tl.cluster(b, n_clusters=3, semantic_keys=("X_cell_sentence",), **FAST)


def test_bad_n_clusters(adata):
    import scllm_dsc as sd

    with pytest.raises(ValueError, match="n_clusters"):
        sd.tl.cluster(adata.copy(), n_clusters=1, **FAST)


def test_plots_on_real_cluster_output(clustered):
    """The sd.pl diagnostics read what sd.tl.cluster writes (no fabricated keys)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import scllm_dsc as sd

    scores = sd.tl.alignment_scores(clustered)
    summary = scores["summary"]
    # trained projection heads align matched cells better than random pairs
    assert summary["matched_cosine"] > summary["random_cosine"]
    fig = sd.pl.alignment(clustered, show=False, return_fig=True)
    assert len(fig.axes) == 3
    fig = sd.pl.training_history(clustered, show=False, return_fig=True)
    titles = {ax.get_title() for ax in fig.axes}
    assert any("recon" in t for t in titles)
    plt.close("all")
