"""What a user sees: quiet training with named progress, cluster counts that agree, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

FAST = dict(max_epochs=3, pretrain_epochs=2, n_top_genes=200, n_pcs=15, batch_size=128)


@pytest.fixture(scope="module")
def pbmc():
    import scllm_dsc as sd

    return sd.datasets.pbmc68k_counts()[:300].copy()


def test_relabel_drops_empty_clusters():
    from scllm_dsc.tl._cluster import _relabel_by_size

    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(5), size=40)
    proba[:, 3] *= 1e-3  # cluster 3 never wins
    proba /= proba.sum(1, keepdims=True)
    labels = proba.argmax(1)
    assert 3 not in labels
    new, p, k = _relabel_by_size(labels, proba)
    sizes = np.bincount(labels, minlength=5)
    assert k == (sizes > 0).sum() == p.shape[1]
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert set(new) == set(range(k))
    # biggest cluster first, and each cell keeps its own cluster (argmax agrees)
    assert np.all(np.diff(np.bincount(new)) <= 0)
    np.testing.assert_array_equal(p.argmax(1), new)


def test_cluster_is_quiet_and_names_its_stages(pbmc, capfd):
    import scanpy as sc

    import scllm_dsc as sd

    assert sc.settings.verbosity == 1  # scanpy's default: warnings only
    a = pbmc.copy()
    capfd.readouterr()
    sd.tl.cluster(a, n_clusters=4, use_semantic=False, **FAST)
    out, err = capfd.readouterr()
    text = out + err
    for noise in (
        "Generating sequential column names",
        "GPU available",
        "TPU available",
        "litlogger",
        "Seed set to",
        "LeafSpec",
        "log_every_n_steps",
    ):
        assert noise not in text, noise
    assert "pre-training: epoch" in text and "joint training: epoch" in text
    # the numbers that are written agree
    k = a.uns["scllm_dsc"]["params"]["n_clusters"]
    assert k == len(a.obs["scllm_dsc"].cat.categories) == a.obsm["scllm_dsc_proba"].shape[1]
    assert a.uns["scllm_dsc"]["params"]["n_clusters_requested"] == 4
    assert a.uns["scllm_dsc"]["params"]["n_clusters_trained"] == 4
    assert a.uns["scllm_dsc"]["params"]["init"] in ("kmeans", "merge")
    assert a.obs["scllm_dsc"].value_counts().min() > 0


def test_progress_bar_follows_scanpy_verbosity(pbmc, capfd):
    import scanpy as sc

    import scllm_dsc as sd

    a = pbmc.copy()
    old = sc.settings.verbosity
    sc.settings.verbosity = 0
    try:
        capfd.readouterr()
        sd.tl.cluster(a, n_clusters=3, use_semantic=False, **FAST)
        out, err = capfd.readouterr()
    finally:
        sc.settings.verbosity = old
    assert "epoch" not in out + err


def test_log_normalised_input_names_the_counts(pbmc):
    import scanpy as sc

    import scllm_dsc as sd

    a = pbmc.copy()
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    with pytest.raises(ValueError, match=r"raw counts") as err:
        sd.tl.cluster(a, n_clusters=3, use_semantic=False, **FAST)
    assert "layer='counts'" in str(err.value)

    b = pbmc.copy()
    b.raw = b
    sc.pp.normalize_total(b)
    sc.pp.log1p(b)
    with pytest.raises(ValueError, match=r"adata\.raw"):
        sd.tl.cluster(b, n_clusters=3, use_semantic=False, **FAST)

    c = pbmc.copy()
    sc.pp.normalize_total(c)
    sc.pp.log1p(c)
    with pytest.raises(ValueError, match=r'layers\["counts"\] = adata\.X\.copy\(\)'):
        sd.tl.cluster(c, n_clusters=3, use_semantic=False, **FAST)


def test_cli_help_and_version(capsys):
    from scllm_dsc import __version__
    from scllm_dsc._cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "demo" in text
