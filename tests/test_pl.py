"""Tests of ``sd.pl`` against the documented AnnData contract of ``sd.tl``.

The data are synthetic counts with planted types (``conftest.synthetic``). The training
``history`` and ``params`` in ``uns`` come from a real (tiny) ``sd.tl.cluster`` run. So that
the metrics are tested against known answers, the views are then replaced by controlled ones:
noisy copies of a PCA of the log-normalised counts, clusters from k-means; gene vectors are
random unit vectors for the genes "with text", and the cell embedding is their
expression-weighted mean (GenePT-w style).
"""

from __future__ import annotations

import copy

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import synthetic  # noqa: E402
from scipy import sparse  # noqa: E402

import scllm_dsc as sd  # noqa: E402
from scllm_dsc._constants import Key  # noqa: E402

KEY = Key.CLUSTER
D = 16
N_CLUSTERS = 5
N_PRE, N_JOINT = 6, 4


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _fabricate(adata, key=KEY, seed=0):
    """Write the keys of sd.tl.embed_genes and sd.tl.cluster(key_added=key)."""
    import scanpy as sc
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    tmp = adata.copy()
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    sc.pp.pca(tmp, n_comps=D, random_state=seed)
    pcs = tmp.obsm["X_pca"].astype(np.float64)
    pcs /= pcs.std()
    structural = _unit(pcs + 0.3 * rng.standard_normal(pcs.shape))
    semantic = _unit(pcs + 0.8 * rng.standard_normal(pcs.shape))
    fused = (structural + semantic) / 2
    labels = KMeans(N_CLUSTERS, n_init=4, random_state=seed).fit_predict(fused)
    cats = [str(i) for i in range(N_CLUSTERS)]
    adata.obs[key] = pd.Categorical(labels.astype(str), categories=cats)
    adata.obsm[Key.latent(key)] = fused
    adata.obsm[f"X_{key}_semantic"] = semantic
    adata.obsm[f"X_{key}_structural"] = structural
    logits = rng.standard_normal((adata.n_obs, N_CLUSTERS))
    adata.obsm[Key.proba(key)] = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    # sd.tl.embed_genes
    n_genes = adata.n_vars
    found = rng.random(n_genes) < 0.8
    G = _unit(rng.standard_normal((n_genes, 32)) + 0.5)  # a shared direction, as real text vectors
    G[~found] = 0
    adata.varm[Key.GENE_TEXT] = G
    adata.var[Key.GENE_TEXT_FOUND] = found
    W = np.asarray(tmp.X.todense() if sparse.issparse(tmp.X) else tmp.X)
    W = W / np.maximum(W.sum(1, keepdims=True), 1e-12)
    adata.obsm[Key.X_GENE_TEXT] = _unit(W @ G)
    adata.uns[Key.GENE_TEXT] = {"params": {"model": "fabricated"}}
    return adata


@pytest.fixture(scope="module")
def clustered():
    import torch

    torch.set_num_threads(1)
    adata = _fabricate(synthetic(500, 300, N_CLUSTERS))
    real = adata.copy()
    real.obsm[Key.X_CELL_SENTENCE] = np.roll(real.obsm[Key.X_GENE_TEXT], 1, axis=1)
    sd.tl.cluster(
        real, n_clusters=N_CLUSTERS, max_epochs=N_PRE + N_JOINT, pretrain_epochs=N_PRE,
        n_top_genes=200, n_pcs=10, n_latent=8, batch_size=128, random_state=0,
        model_kwargs={"n_hidden": 16}, train_kwargs={"enable_progress_bar": False},
    )
    adata.uns[KEY] = real.uns[KEY]  # the parameters and training history of a real run
    return adata


@pytest.fixture
def adata(clustered):
    return clustered.copy()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _snapshot(adata):
    return {
        "X": adata.X.copy(),
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "obsm": set(adata.obsm.keys()),
        "obsp": set(adata.obsp.keys()),
        "uns": copy.deepcopy(dict(adata.uns)),
        "layers": set(adata.layers.keys()),
    }


def _assert_unchanged(adata, snap, new_obsm=()):
    if sparse.issparse(adata.X):
        assert (adata.X != snap["X"]).nnz == 0
    else:
        assert np.array_equal(adata.X, snap["X"])
    pd.testing.assert_frame_equal(adata.obs, snap["obs"])
    pd.testing.assert_frame_equal(adata.var, snap["var"])
    assert set(adata.obsm.keys()) == snap["obsm"] | set(new_obsm)
    assert set(adata.obsp.keys()) == snap["obsp"]
    assert set(adata.layers.keys()) == snap["layers"]
    assert set(adata.uns.keys()) == set(snap["uns"].keys())


# ---------------------------------------------------------------- alignment_scores


def test_alignment_scores_values(adata):
    res = sd.tl.alignment_scores(adata, KEY, k=5, max_cells=None)
    s = res["summary"]
    assert s["n_cells"] == adata.n_obs
    # views are noisy copies of one PCA: matched pairs agree far more than random pairs
    assert s["matched_cosine"] > s["random_cosine"] + 0.3
    assert np.isclose(s["cosine_gap"], s["matched_cosine"] - s["random_cosine"])
    assert s["recall_at_1"] > 20 * s["chance_recall_at_1"]
    assert s["recall_at_1"] <= s["recall_at_k"] <= 1
    assert s["same_group"] > s["chance_same_group"]
    assert np.isclose(s["recall_at_1"], (s["recall_at_1_sem2str"] + s["recall_at_1_str2sem"]) / 2)
    pg = res["per_group"]
    assert list(pg.index) == [str(i) for i in range(N_CLUSTERS)]
    assert pg["n_cells"].sum() == adata.n_obs
    # per-group means weighted by size give the overall mean
    weighted = (pg["matched_cosine"] * pg["n_cells"]).sum() / adata.n_obs
    assert np.isclose(weighted, s["matched_cosine"])
    assert res["matched_cosine"].shape == (adata.n_obs,)
    assert np.all(np.abs(res["matched_cosine"]) <= 1 + 1e-9)


def test_alignment_scores_identical_views_are_perfect(adata):
    adata.obsm[f"X_{KEY}_structural"] = adata.obsm[f"X_{KEY}_semantic"].copy()
    s = sd.tl.alignment_scores(adata, KEY, max_cells=None)["summary"]
    assert np.isclose(s["matched_cosine"], 1.0)
    assert s["recall_at_1"] == 1.0 and s["recall_at_k"] == 1.0


def test_alignment_scores_shuffled_views_are_at_chance(adata):
    rng = np.random.default_rng(1)
    struc = adata.obsm[f"X_{KEY}_structural"]
    adata.obsm[f"X_{KEY}_structural"] = struc[rng.permutation(adata.n_obs)]
    s = sd.tl.alignment_scores(adata, KEY, k=10, max_cells=None)["summary"]
    assert s["recall_at_1"] < 0.02
    assert abs(s["matched_cosine"] - s["random_cosine"]) < 0.1


def test_alignment_scores_subsample_is_reproducible(adata):
    a = sd.tl.alignment_scores(adata, KEY, max_cells=200, random_state=3)
    b = sd.tl.alignment_scores(adata, KEY, max_cells=200, random_state=3)
    c = sd.tl.alignment_scores(adata, KEY, max_cells=200, random_state=4)
    assert a["summary"]["n_cells"] == 200 and len(a["obs_names"]) == 200
    pd.testing.assert_series_equal(a["summary"], b["summary"])
    assert not a["obs_names"].equals(c["obs_names"])
    assert np.isclose(a["summary"]["chance_recall_at_1"], 1 / 200)


def test_alignment_scores_groupby_other_column(adata):
    res = sd.tl.alignment_scores(adata, KEY, groupby="cell_type", max_cells=None)
    assert res["groupby"] == "cell_type"
    assert set(res["per_group"].index) == set(adata.obs["cell_type"].astype(str))


# ---------------------------------------------------------------- alignment plot


def test_alignment_figure(adata):
    snap = _snapshot(adata)
    fig = sd.pl.alignment(adata, KEY, k=5, return_fig=True)
    axes = fig.axes
    assert len(axes) == 3
    assert [ax.get_title() for ax in axes] == [
        "Cross-view cosine",
        "Alignment per cluster",
        "Cross-view retrieval",
    ]
    ax_cos, ax_grp, ax_ret = axes
    assert ax_cos.get_xlabel().startswith("cosine similarity")
    assert ax_cos.get_ylabel() == "cells"
    legend = [t.get_text() for t in ax_cos.get_legend().get_texts()]
    assert legend == ["random pairs", "matched cells"]
    # one bar per cluster, in the cluster colours, plus the random-pair reference line
    assert len(ax_grp.patches) == N_CLUSTERS
    assert [t.get_text() for t in ax_grp.get_xticklabels()] == [str(i) for i in range(N_CLUSTERS)]
    assert ax_grp.get_ylabel() == "mean matched cosine"
    assert len(ax_grp.get_lines()) == 1
    # three retrieval bars with chance ticks
    assert len(ax_ret.patches) == 3
    assert [t.get_text() for t in ax_ret.get_xticklabels()] == ["top-1", "top-5", "same cluster"]
    assert len(ax_ret.collections) == 1
    heights = [p.get_height() for p in ax_ret.patches]
    s = sd.tl.alignment_scores(adata, KEY, k=5)["summary"]
    assert np.allclose(heights, [s["recall_at_1"], s["recall_at_k"], s["same_group"]])
    _assert_unchanged(adata, snap)


def test_alignment_uses_stored_palette(adata):
    adata.uns[f"{KEY}_colors"] = ["#ff0000", "#00ff00", "#0000ff", "#000000", "#ffff00"]
    fig = sd.pl.alignment(adata, KEY, return_fig=True)
    face = [matplotlib.colors.to_hex(p.get_facecolor()) for p in fig.axes[1].patches]
    assert face == ["#ff0000", "#00ff00", "#0000ff", "#000000", "#ffff00"]


def test_alignment_show_false_returns_axes_and_accepts_axs(adata):
    fig, axs = plt.subplots(1, 3)
    out = sd.pl.alignment(adata, KEY, axs=axs, show=False)
    assert set(out) == {"cosine", "groups", "retrieval"}
    assert out["cosine"] is axs[0]
    with pytest.raises(ValueError, match="3 matplotlib Axes"):
        sd.pl.alignment(adata, KEY, axs=axs[:2], show=False)


def test_alignment_save(adata, tmp_path):
    import scanpy as sc

    old = sc.settings.figdir
    sc.settings.figdir = tmp_path
    try:
        sd.pl.alignment(adata, KEY, show=False, save="_test.png")
    finally:
        sc.settings.figdir = old
    assert (tmp_path / "alignment_test.png").stat().st_size > 0


@pytest.mark.parametrize("missing", [f"X_{KEY}_semantic", f"X_{KEY}_structural"])
def test_alignment_missing_view(adata, missing):
    del adata.obsm[missing]
    with pytest.raises(KeyError, match=r"sd\.tl\.cluster\(adata, key_added='scllm_dsc'\)") as err:
        sd.pl.alignment(adata, KEY, show=False)
    assert missing in str(err.value)


def test_alignment_missing_clusters(adata):
    del adata.obs[KEY]
    with pytest.raises(KeyError, match=r"adata\.obs\['scllm_dsc'\].*sd\.tl\.cluster"):
        sd.tl.alignment_scores(adata, KEY)


def test_alignment_other_key(clustered):
    adata = _fabricate(clustered.copy(), key="run2", seed=2)
    fig = sd.pl.alignment(adata, "run2", return_fig=True)
    assert len(fig.axes[1].patches) == N_CLUSTERS
    with pytest.raises(KeyError, match="key_added='nope'"):
        sd.pl.alignment(adata, "nope")


# ---------------------------------------------------------------- views


def test_views_figure_and_stored_umaps(adata):
    adata.obsp["connectivities"] = sparse.identity(adata.n_obs, format="csr")
    adata.uns["neighbors"] = {"params": {"method": "user"}}
    snap = _snapshot(adata)
    fig = sd.pl.views(adata, KEY, return_fig=True, size=5)
    _assert_unchanged(adata, snap)  # a plot writes nothing
    assert adata.uns["neighbors"] == {"params": {"method": "user"}}
    assert (adata.obsp["connectivities"] != sparse.identity(adata.n_obs)).nnz == 0
    assert f"{KEY}_colors" not in adata.uns
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["semantic view", "structural view", "fused"]
    assert all(ax.get_xlabel() == "UMAP1" and ax.get_ylabel() == "UMAP2" for ax in panels)
    assert all(len(ax.collections) >= 1 for ax in panels)
    # one legend, on the last panel, with every cluster
    assert panels[0].get_legend() is None and panels[1].get_legend() is None
    legend = [t.get_text() for t in panels[2].get_legend().get_texts()]
    assert legend == [str(i) for i in range(adata.obs[KEY].nunique())]
    drawn = panels[0].collections[0].get_offsets()

    # a UMAP stored under sd.pl.umap_key is drawn as it is; recompute=True ignores it
    stored = sd.pl.umap_key(f"X_{KEY}_semantic")
    adata.obsm[stored] = np.zeros((adata.n_obs, 2))
    axes = sd.pl.views(adata, KEY, show=False)
    assert np.all(np.asarray(axes[0].collections[0].get_offsets()) == 0.0)
    axes = sd.pl.views(adata, KEY, show=False, recompute=True)
    np.testing.assert_allclose(np.sort(axes[0].collections[0].get_offsets(), 0),
                               np.sort(drawn, 0))
    assert np.all(adata.obsm[stored] == 0.0)


def test_views_color_rows(adata):
    axes = sd.pl.views(adata, KEY, color=["cell_type", "CD3E"], show=False)
    assert len(axes) == 6
    assert axes[0].get_title() == "semantic view: cell_type"
    assert axes[4].get_title() == "structural view: CD3E"
    assert "cell_type_colors" not in adata.uns


def test_views_errors(adata):
    with pytest.raises(KeyError, match="neither a column"):
        sd.pl.views(adata, KEY, color="not_a_column", show=False)
    del adata.obsm[f"X_{KEY}_structural"]
    with pytest.raises(KeyError, match=r"X_scllm_dsc_structural.*sd\.tl\.cluster"):
        sd.pl.views(adata, KEY, show=False)
    assert not any(k.startswith("X_umap") for k in adata.obsm)  # nothing computed on error


# ---------------------------------------------------------------- training history


def test_training_history_from_adata(adata):
    hist = adata.uns[KEY]["history"]
    # what the model really logs: every loss term, and the phase (0 pre-training, 1 joint)
    assert {"recon_train", "ncut_train", "infonce_train", "kl_train", "phase_train"} <= set(hist)
    np.testing.assert_array_equal(hist["phase_train"], [0.0] * N_PRE + [1.0] * N_JOINT)
    snap = _snapshot(adata)
    fig = sd.pl.training_history(adata, KEY, return_fig=True)
    _assert_unchanged(adata, snap)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == len(hist) - 1  # one panel per term; the phase shades them instead
    assert {"recon", "ncut", "infonce", "kl", "loss"} <= set(titles) and "phase" not in titles
    for ax in fig.axes:
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "loss"
        assert len(ax.get_lines()) == 2  # the curve and the phase boundary
        boundary = ax.get_lines()[1].get_xdata()
        assert np.allclose(boundary, N_PRE - 0.5)
        assert len(ax.patches) == 2  # shaded pretrain and joint spans
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["train", "pretrain", "joint"]
    recon = fig.axes[titles.index("recon")]
    np.testing.assert_allclose(recon.get_lines()[0].get_ydata(), hist["recon_train"])


def test_training_history_without_phase(adata):
    hist = dict(adata.uns[KEY]["history"])
    del hist["phase_train"]
    adata.uns[KEY]["history"] = hist
    fig = sd.pl.training_history(adata, KEY, return_fig=True, terms=["kl", "ncut"])
    assert [ax.get_title() for ax in fig.axes] == ["kl", "ncut"]
    assert all(not ax.patches and len(ax.get_lines()) == 1 for ax in fig.axes)


def test_training_history_named_phases():
    hist = {"recon": [3.0, 2.0, 1.0, 0.5], "phase": ["pretrain", "pretrain", "joint", "joint"]}
    axes = sd.pl.training_history(hist, show=False)
    assert [ax.get_title() for ax in axes] == ["recon"]
    assert len(axes[0].patches) == 2
    assert np.allclose(axes[0].get_lines()[1].get_xdata(), 1.5)


def test_training_history_model_scvi_style():
    epochs = pd.Index(np.arange(5), name="epoch")

    def frame(name, values):
        return pd.DataFrame({name: values}, index=epochs)

    class Model:
        history = {
            "train_loss_epoch": frame("train_loss_epoch", np.linspace(3, 1, 5)),
            "validation_loss": frame("validation_loss", np.linspace(3.5, 1.5, 5)),
            "reconstruction_loss_train": frame("reconstruction_loss_train", np.ones(5)),
        }

    axes = sd.pl.training_history(Model(), show=False, log=True)
    assert [ax.get_title() for ax in axes] == ["loss", "reconstruction_loss"]
    assert len(axes[0].get_lines()) == 2  # train and validation share the panel
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["train", "validation"]
    assert axes[0].get_yscale() == "log"
    assert not axes[0].patches  # no phases known


def test_training_history_dataframe_and_nested():
    df = pd.DataFrame({"epoch": [0, 1, 2], "total": [3.0, 2.0, 1.0]})
    axes = sd.pl.training_history(df, show=False)
    assert len(axes) == 1 and axes[0].get_title() == "total"
    nested = {"pretrain": {"recon": [2.0, 1.5]}, "joint": {"recon": [1.2, 1.0], "kl": [0.5, 0.4]}}
    axes = sd.pl.training_history(nested, show=False)
    assert [ax.get_title() for ax in axes] == ["recon", "kl"]
    assert np.allclose(axes[0].get_lines()[0].get_ydata(), [2.0, 1.5, 1.2, 1.0])
    assert len(axes[0].patches) == 2


def test_training_history_errors(adata):
    del adata.uns[KEY]
    with pytest.raises(KeyError, match=r"uns\['scllm_dsc'\]\['history'\].*sd\.tl\.cluster"):
        sd.pl.training_history(adata, KEY)
    with pytest.raises(KeyError, match="Unknown loss term"):
        sd.pl.training_history({"a": [1.0, 2.0]}, terms=["b"])


# ---------------------------------------------------------------- cluster genes


def test_cluster_gene_table_values(adata):
    snap = _snapshot(adata)
    table = sd.pl.cluster_gene_table(adata, KEY, n_genes=5)
    _assert_unchanged(adata, snap)
    assert list(table.columns) == [
        "cluster", "rank", "knowledge_gene", "knowledge_cosine", "de_gene", "de_score"
    ]
    assert len(table) == N_CLUSTERS * 5
    found = set(adata.var_names[adata.var[Key.GENE_TEXT_FOUND]])
    assert set(table["knowledge_gene"]) <= found
    assert set(table["de_gene"]) <= set(adata.var_names)
    for _, sub in table.groupby("cluster", observed=True):
        assert list(sub["rank"]) == [1, 2, 3, 4, 5]
        assert np.all(np.diff(sub["knowledge_cosine"].to_numpy()) <= 1e-12)
        assert np.all(np.diff(sub["de_score"].to_numpy()) <= 1e-9)
    # knowledge genes are recomputed by hand for one cluster
    G = adata.varm[Key.GENE_TEXT][adata.var[Key.GENE_TEXT_FOUND].to_numpy()]
    C = adata.obsm[Key.X_GENE_TEXT]
    cen = C[(adata.obs[KEY] == "2").to_numpy()].mean(0) - C.mean(0)
    Gc = G - G.mean(0)
    sims = (Gc / np.linalg.norm(Gc, axis=1, keepdims=True)) @ (cen / np.linalg.norm(cen))
    best = adata.var_names[adata.var[Key.GENE_TEXT_FOUND].to_numpy()][np.argsort(-sims)[:5]]
    assert list(table.loc[table["cluster"] == "2", "knowledge_gene"]) == list(best)


def test_cluster_gene_table_centering_matters(adata):
    centred = sd.pl.cluster_gene_table(adata, KEY, n_genes=10)
    raw = sd.pl.cluster_gene_table(adata, KEY, n_genes=10, center=False)
    # without centring the shared direction dominates: clusters share more top genes
    def overlap(t):
        sets = [set(s["knowledge_gene"]) for _, s in t.groupby("cluster", observed=True)]
        return np.mean([len(a & b) for i, a in enumerate(sets) for b in sets[i + 1 :]])

    assert overlap(raw) >= overlap(centred)


def test_cluster_gene_table_reuses_rank_genes_groups(adata):
    import scanpy as sc

    tmp = adata.copy()
    sc.pp.normalize_total(tmp)
    sc.pp.log1p(tmp)
    sc.tl.rank_genes_groups(tmp, KEY, method="wilcoxon", n_genes=5)
    adata.uns["rank_genes_groups"] = tmp.uns["rank_genes_groups"]
    table = sd.pl.cluster_gene_table(adata, KEY, n_genes=3)
    expected = pd.DataFrame(tmp.uns["rank_genes_groups"]["names"])["0"][:3].tolist()
    assert table.loc[table["cluster"] == "0", "de_gene"].tolist() == expected


def test_cluster_genes_figure(adata):
    fig = sd.pl.cluster_genes(adata, KEY, n_genes=4, return_fig=True)
    assert len(fig.axes) == N_CLUSTERS
    table = sd.pl.cluster_gene_table(adata, KEY, n_genes=4)
    sizes = adata.obs[KEY].value_counts()
    for ax, c in zip(fig.axes, [str(i) for i in range(N_CLUSTERS)], strict=True):
        assert ax.get_title() == f"{KEY} {c} ({sizes[c]} cells)"
        texts = [t.get_text() for t in ax.texts]
        assert len(texts) == 2 + 2 * 4
        assert texts[:2] == ["knowledge", "DE"]
        sub = table[table["cluster"] == c]
        assert [t.split()[0] for t in texts[2::2]] == list(sub["knowledge_gene"])
        assert [t.split()[0] for t in texts[3::2]] == list(sub["de_gene"])


def test_cluster_genes_returns_table(adata):
    out = sd.pl.cluster_genes(adata, KEY, n_genes=3, show=False)
    assert isinstance(out, pd.DataFrame) and len(out) == 3 * N_CLUSTERS


def test_cluster_genes_missing_keys(adata):
    a = adata.copy()
    del a.varm[Key.GENE_TEXT]
    with pytest.raises(KeyError, match=r"varm\['gene_text'\].*sd\.tl\.embed_genes"):
        sd.pl.cluster_genes(a, KEY, show=False)
    a = adata.copy()
    del a.obsm[Key.X_GENE_TEXT]
    with pytest.raises(KeyError, match=r"obsm\['X_gene_text'\].*sd\.tl\.embed_genes"):
        sd.pl.cluster_genes(a, KEY, show=False)
    with pytest.raises(KeyError, match=r"sd\.tl\.cluster\(adata, key_added='other'\)"):
        sd.pl.cluster_genes(adata, "other", show=False)


def test_missing_key_error_message_is_plain(adata):
    del adata.obsm[f"X_{KEY}_semantic"]
    with pytest.raises(sd.pl.MissingKeyError) as err:
        sd.tl.alignment_scores(adata, KEY)
    assert str(err.value).startswith("`adata.obsm['X_scllm_dsc_semantic']` not found")


def test_key_helpers():
    assert sd.pl.semantic_key("abc") == "X_abc_semantic"
    assert sd.pl.structural_key("abc") == "X_abc_structural"
    assert sd.pl.umap_key("X_abc_semantic") == "X_umap_abc_semantic"


def test_training_history_after_h5ad_round_trip(adata, tmp_path):
    import anndata as ad

    small = adata[:50].copy()
    small.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    fig = sd.pl.training_history(back, KEY, return_fig=True)
    # h5ad stores mappings with sorted keys, so only the set of panels is preserved
    before = sd.pl.training_history(adata, KEY, return_fig=True)
    assert sorted(ax.get_title() for ax in fig.axes) == sorted(
        ax.get_title() for ax in before.axes
    )
    assert all(len(ax.patches) == 2 for ax in fig.axes)
