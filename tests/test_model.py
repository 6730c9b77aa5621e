"""The scvi-tools model: API round trip, losses, save/load, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import synthetic
from reliability._helpers import semantic_standin as _semantic_standin

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def adata():
    a = synthetic(400, 480)
    del a.obs["cell_type"]
    _semantic_standin(a)
    return a


@pytest.fixture(scope="module")
def trained(adata, tmp_path_factory):
    import scllm_dsc as sd

    a = adata.copy()
    sd.model.SCLLMDSC.setup_anndata(a, n_top_genes=300, n_pcs=20)
    model = sd.model.SCLLMDSC(a, n_clusters=4, n_latent=8, n_hidden=32)
    model.train(max_epochs=4, batch_size=128, random_state=0, enable_progress_bar=False)
    return a, model


def test_losses():
    from scllm_dsc import nn as snn

    z = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    assert snn.infonce(z, z, 0.1) < snn.infonce(z, z.roll(1, 0), 0.1)
    assert snn.ncut_loss(z, z[:, None, :].expand(16, 3, 8), torch.ones(16, 3)) < 1e-5
    q = snn.student_t_q(torch.randn(50, 8), torch.randn(3, 8))
    torch.testing.assert_close(q.sum(1), torch.ones(50))
    for p in (snn.sinkhorn_target(q.double()), snn.dec_target(q)):
        torch.testing.assert_close(p.sum(1).float(), torch.ones(50), atol=1e-5, rtol=0)
    assert snn.kl_target(q, q).abs() < 1e-6
    assert snn.variance_reg(torch.zeros(10, 4)) > 0.9
    e = torch.eye(8)
    assert snn.orthogonality(e) < 1e-6


def test_nb_nll_matches_scvi():
    from scvi.distributions import NegativeBinomial

    from scllm_dsc.nn import nb_nll

    x = torch.poisson(torch.rand(6, 5) * 3)
    mu, th = torch.rand(6, 5) * 3 + 0.1, torch.rand(5) + 0.5
    ref = -NegativeBinomial(mu=mu, theta=th.expand(6, 5)).log_prob(x)
    torch.testing.assert_close(nb_nll(x, mu, th) + torch.lgamma(x + 1), ref, atol=1e-4, rtol=1e-4)


def test_module_is_scvi_module():
    from scvi.module.base import BaseModuleClass

    from scllm_dsc.module import SCLLMDSCModule

    assert issubclass(SCLLMDSCModule, BaseModuleClass)


def test_api_round_trip(trained, tmp_path):
    import scllm_dsc as sd

    a, model = trained
    assert model.is_trained_
    z = model.get_latent_representation()
    assert z.shape == (a.n_obs, 16)  # [structural, semantic] concatenation
    assert model.get_latent_representation(representation="structural").shape == (a.n_obs, 8)
    assert model.get_latent_representation(representation="semantic").shape == (a.n_obs, 8)
    labels = model.predict()
    proba = model.predict(soft=True)
    assert labels.shape == (a.n_obs,) and proba.shape == (a.n_obs, 4)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(1), labels)
    # history has every loss term and the phase
    for key in ("recon_train", "ncut_train", "infonce_train", "var_reg_train", "kl_train",
                "phase_train", "train_loss"):
        assert key in model.history
    phase = np.array([float(v) for v in model.history["phase_train"].iloc[:, 0]])
    np.testing.assert_array_equal(phase, [0, 0, 1, 1])
    # save / load: same latent and labels
    model.save(tmp_path / "m", overwrite=True)
    loaded = sd.model.SCLLMDSC.load(tmp_path / "m", adata=a)
    np.testing.assert_allclose(loaded.get_latent_representation(), z, atol=1e-6)
    np.testing.assert_array_equal(loaded.predict(), labels)


@pytest.mark.parametrize(("update_interval", "expected"), [(1, 4), (3, 2)])
def test_target_refresh_schedule(adata, monkeypatch, update_interval, expected):
    """The target is refreshed at joint epochs 0, u, 2u, ... of the joint phase only."""
    import scllm_dsc as sd

    a = adata.copy()
    sd.model.SCLLMDSC.setup_anndata(a, semantic_keys=None, n_top_genes=300, n_pcs=20)
    model = sd.model.SCLLMDSC(a, n_clusters=3, n_latent=8, n_hidden=32)
    calls = []
    refresh = model._refresh_target

    def counted():
        calls.append(model.module.clustering)
        refresh()

    monkeypatch.setattr(model, "_refresh_target", counted)
    model.train(max_epochs=6, pretrain_epochs=2, batch_size=200, update_interval=update_interval,
                random_state=0, enable_progress_bar=False)
    assert calls == [True] * expected


def test_default_steps():
    """The 20-epoch floor is capped in steps: small data keeps whole epochs, large data a
    fixed budget."""
    from scllm_dsc.model._scllmdsc import default_epochs, default_steps

    assert default_steps(2140) == 8 * default_epochs(2140) == 600
    assert default_steps(8684) == 33 * 20  # whole epochs below ~12,800 cells
    assert default_steps(100_000) == default_steps(1_000_000) == 1000


def test_step_budget_and_batch_target(adata, monkeypatch):
    """``max_steps`` splits the steps between the phases (partial epochs allowed); the
    per-batch target never runs a pass over all cells."""
    import scllm_dsc as sd

    a = adata.copy()
    sd.model.SCLLMDSC.setup_anndata(a, semantic_keys=None, n_top_genes=300, n_pcs=20)
    assert np.issubdtype(a.obsm["_scllm_dsc_nn_indices"].dtype, np.integer)
    model = sd.model.SCLLMDSC(a, n_clusters=3, n_latent=8, n_hidden=32)

    def no_full_pass():
        raise AssertionError("the per-batch target must not refresh over all cells")

    monkeypatch.setattr(model, "_refresh_target", no_full_pass)
    steps = []
    loss = model.module.loss

    def counted(*args, **kwargs):
        out = loss(*args, **kwargs)
        if model.module.training:
            steps.append((model.module.clustering, float(out.extra_metrics["kl"])))
        return out

    monkeypatch.setattr(model.module, "loss", counted)
    model.train(max_steps=7, batch_size=64, target_update="batch", random_state=0,
                enable_progress_bar=False)
    assert [c for c, _ in steps] == [False] * 3 + [True] * 4  # 400 cells: 6 steps an epoch
    assert all(kl > 0 for c, kl in steps if c)  # the clustering loss had a target
    labels = model.predict()
    assert labels.shape == (a.n_obs,) and labels.max() < 3
    with pytest.raises(ValueError, match="target_update"):
        model.train(max_steps=2, target_update="never")


def test_setup_registers_sparse_graph(trained):
    from scipy import sparse

    a, _ = trained
    C = a.obsp["scllm_dsc_connectivities"]
    assert sparse.issparse(C) and C.nnz < a.n_obs * 40
    assert a.uns["scllm_dsc_neighbors"]["connectivities_key"] == "scllm_dsc_connectivities"


def test_missing_semantic_key_error(adata):
    import scllm_dsc as sd

    a = adata.copy()
    del a.obsm["X_cell_sentence"]
    with pytest.raises(KeyError, match=r"sd\.tl\.cell_sentences"):
        sd.model.SCLLMDSC.setup_anndata(a)


def test_leiden_estimates_k_and_reloads(adata, tmp_path):
    import scllm_dsc as sd

    a = adata.copy()
    sd.model.SCLLMDSC.setup_anndata(a, semantic_keys=None, n_top_genes=300, n_pcs=20)
    model = sd.model.SCLLMDSC(a, n_clusters=None, n_latent=8, n_hidden=32)
    model.train(max_epochs=2, batch_size=200, random_state=0, enable_progress_bar=False)
    k = model.n_clusters
    assert k >= 2 and model.predict(soft=True).shape == (a.n_obs, k)
    model.save(tmp_path / "m")
    loaded = sd.model.SCLLMDSC.load(tmp_path / "m", adata=a)
    np.testing.assert_array_equal(loaded.predict(), model.predict())


def test_cpu_auto_accelerator(trained):
    from scvi.model._utils import parse_device_args

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    accelerator, _, device = parse_device_args("auto", "auto", return_device="torch")
    assert accelerator == "cpu" and device.type == "cpu"
    _, model = trained
    assert model.device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_training(adata):
    import scllm_dsc as sd

    a = adata.copy()
    sd.model.SCLLMDSC.setup_anndata(a, semantic_keys=None, n_top_genes=300, n_pcs=20)
    model = sd.model.SCLLMDSC(a, n_clusters=3, n_latent=8, n_hidden=32)
    model.train(max_epochs=2, accelerator="auto", enable_progress_bar=False)
    assert model.device.type == "cuda"
    assert model.predict().shape == (a.n_obs,)


def test_setup_warns_when_all_genes_of_a_large_panel_are_reconstructed(caplog):
    """The model API on a whole transcriptome: a warning that says to subset to HVGs."""
    import anndata as ad
    from scipy import sparse

    import scllm_dsc as sd

    rng = np.random.default_rng(0)
    counts = sparse.csr_matrix(rng.poisson(0.3, size=(60, 3200)).astype(np.float32))
    a = ad.AnnData(counts)
    with caplog.at_level("WARNING", logger="scllm_dsc"):
        sd.model.SCLLMDSC.setup_anndata(a, semantic_keys=None, n_pcs=5, n_top_genes=500)
    assert "3200 genes" in caplog.text and "highly variable" in caplog.text
    caplog.clear()
    small = ad.AnnData(counts[:, :900])
    with caplog.at_level("WARNING", logger="scllm_dsc"):
        sd.model.SCLLMDSC.setup_anndata(small, semantic_keys=None, n_pcs=5, n_top_genes=500)
    assert "highly variable" not in caplog.text
