"""Invariants: tools write only their documented keys and never ``X`` or existing layers; the
same inputs and ``random_state`` give identical results on CPU (also in another process); a
saved model loads back to the same latent and labels."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import (
    CELL_SENTENCES_OUT,
    CLUSTER_OUT,
    EMBED_GENES_OUT,
    FAST,
    SETUP_OUT,
    adata_fingerprint,
    assert_only_added,
    pipeline,
    semantic_standin,
    tiny_knowledge,
)
from _tiny_models import tiny_bert
from conftest import synthetic
from scipy import sparse

import scllm_dsc as sd

torch.set_num_threads(1)
TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"
CANDIDATES = {
    "T cell": "t cell receptor immune cell",
    "B cell": "b cell immune protein",
    "monocyte": "immune cell kinase",
}


@pytest.fixture(scope="module")
def counts():
    a = synthetic(200, 300)
    del a.obs["cell_type"]
    return a


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return str(tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert"))


@pytest.fixture(scope="module")
def know(counts):
    return tiny_knowledge(counts.var_names)


def _user_data(counts):
    """A user's AnnData: log-normalised X, counts in a layer, their own annotations."""
    import scanpy as sc

    a = counts.copy()
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    rng = np.random.default_rng(0)
    a.obs["batch"] = rng.choice(["a", "b"], a.n_obs)
    a.var["my_flag"] = rng.random(a.n_vars) > 0.5
    a.obsm["X_pca"] = rng.normal(size=(a.n_obs, 5)).astype(np.float32)
    a.varm["PCs"] = rng.normal(size=(a.n_vars, 5))
    a.obsp["distances"] = sparse.random(a.n_obs, a.n_obs, density=0.01, random_state=0,
                                        format="csr")
    a.uns["mine"] = {"note": "keep"}
    return a


# -- outputs only under documented keys ---------------------------------------------------------
def test_tools_write_only_documented_keys(counts, bert, know):
    a = _user_data(counts)
    before = adata_fingerprint(a)
    sd.tl.embed_genes(a, know, model=bert, species="human", layer="counts")
    assert_only_added(before, a, **EMBED_GENES_OUT)

    before = adata_fingerprint(a)
    sd.tl.cell_sentences(a, model=bert, layer="counts")
    assert_only_added(before, a, **CELL_SENTENCES_OUT)

    before = adata_fingerprint(a)
    sd.tl.cluster(a, n_clusters=3, layer="counts", **FAST)
    assert_only_added(before, a, **CLUSTER_OUT)
    # the semantic keys computed above are read, not rewritten
    assert adata_fingerprint(a)["obsm"]["X_gene_text"] == before["obsm"]["X_gene_text"]

    before = adata_fingerprint(a)
    sd.tl.annotate_clusters(a, candidates=CANDIDATES, model=bert, layer="counts",
                            n_background=20)
    assert_only_added(before, a, obs=["scllm_dsc_annotation"], uns=["scllm_dsc_annotation"])

    before = adata_fingerprint(a)
    scores = sd.tl.alignment_scores(a)
    assert "summary" in scores
    assert adata_fingerprint(a) == before

    # running a tool again replaces its own outputs and nothing else
    before = adata_fingerprint(a)
    sd.tl.cluster(a, n_clusters=3, layer="counts", **FAST)
    assert_only_added(before, a, **CLUSTER_OUT)
    assert a.uns["mine"] == {"note": "keep"}


def test_copy_true_leaves_the_input_alone(counts, bert, know):
    a = _user_data(counts)
    semantic_standin(a)
    before = adata_fingerprint(a)
    out = sd.tl.embed_genes(a, know, model=bert, species="human", layer="counts", copy=True)
    out = sd.tl.cell_sentences(a, model=bert, layer="counts", copy=True)
    out = sd.tl.cluster(a, n_clusters=3, layer="counts", copy=True, **FAST)
    assert adata_fingerprint(a) == before
    assert "scllm_dsc" in out.obs and "scllm_dsc" not in a.obs


def test_model_writes_only_at_setup(counts, tmp_path):
    a = counts.copy()
    semantic_standin(a)
    before = adata_fingerprint(a)
    sd.model.SCLLMDSC.setup_anndata(a, n_pcs=10, n_top_genes=200)
    assert_only_added(before, a, **SETUP_OUT)
    before = adata_fingerprint(a)
    model = sd.model.SCLLMDSC(a, n_clusters=3, n_latent=8, n_hidden=16)
    model.train(max_epochs=2, batch_size=64, random_state=0, enable_progress_bar=False)
    model.get_latent_representation()
    for rep in ("structural", "semantic", "aligned_structural"):
        model.get_latent_representation(representation=rep)
    model.predict(soft=True)
    model.save(tmp_path / "m")
    assert adata_fingerprint(a) == before


# -- same inputs and seed, same results ---------------------------------------------------------
def _scramble_global_rngs():
    torch.manual_seed(12345)
    torch.rand(1000)
    np.random.seed(54321)  # noqa: NPY002 - the legacy global state is what we perturb
    np.random.rand(1000)  # noqa: NPY002
    random.seed(777)


def test_cluster_does_not_depend_on_global_random_state(counts):
    a = counts.copy()
    semantic_standin(a)
    first = a.copy()
    sd.tl.cluster(first, n_clusters=3, **FAST)
    _scramble_global_rngs()
    again = a.copy()
    sd.tl.cluster(again, n_clusters=3, **FAST)
    for key in ("X_scllm_dsc", "scllm_dsc_proba", "X_scllm_dsc_semantic"):
        np.testing.assert_array_equal(again.obsm[key], first.obsm[key])
    np.testing.assert_array_equal(again.obs["scllm_dsc"], first.obs["scllm_dsc"])
    other = a.copy()
    sd.tl.cluster(other, n_clusters=3, random_state=1, **FAST)
    assert not np.array_equal(other.obsm["X_scllm_dsc"], first.obsm["X_scllm_dsc"])


def test_model_is_reproducible_when_seeded_before_creation(counts):
    """The documented way for the model API: set ``scvi.settings.seed`` before creating it."""
    import scvi

    runs = []
    for _ in range(2):
        a = counts.copy()
        semantic_standin(a)
        sd.model.SCLLMDSC.setup_anndata(a, n_pcs=10, n_top_genes=200)
        _scramble_global_rngs()
        scvi.settings.seed = 0
        model = sd.model.SCLLMDSC(a, n_clusters=3, n_latent=8, n_hidden=16)
        model.train(max_epochs=4, batch_size=64, random_state=0, enable_progress_bar=False)
        runs.append((model.get_latent_representation(), model.predict()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


_CHILD = """
    import sys
    import numpy as np
    import torch

    torch.set_num_threads(1)
    sys.path[:0] = [sys.argv[1], sys.argv[2]]
    from _helpers import pipeline

    np.savez(sys.argv[4], **pipeline(sys.argv[3]))
"""


def test_identical_results_in_another_process(bert, tmp_path):
    """A fresh interpreter (another hash seed, an empty embedding cache) agrees bit for bit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS="1", PYTHONHASHSEED="12345",
               SCLLM_DSC_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "child.npz"
    args = [str(TESTS / "reliability"), str(TESTS), bert, str(out)]
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_CHILD), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    child, here = np.load(out), pipeline(bert)
    for key in ("labels", "X_gene_text", "X_cell_sentence", "X_scllm_dsc"):
        np.testing.assert_array_equal(child[key], here[key], err_msg=key)


# -- save / load --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clustered(counts):
    a = counts.copy()
    semantic_standin(a)
    model = sd.tl.cluster(a, n_clusters=3, return_model=True, **FAST)
    return a, model


def test_save_load_round_trip(clustered, counts, tmp_path):
    a, model = clustered
    z, labels = model.get_latent_representation(), model.predict()
    np.testing.assert_allclose(z, a.obsm["X_scllm_dsc"], atol=1e-6)
    model.save(tmp_path / "m", save_anndata=True)
    # onto the model's own registered data
    loaded = sd.model.SCLLMDSC.load(tmp_path / "m", adata=model.adata)
    np.testing.assert_array_equal(loaded.get_latent_representation(), z)
    np.testing.assert_array_equal(loaded.predict(), labels)
    assert loaded.n_clusters == model.n_clusters
    # from the AnnData saved with it
    loaded = sd.model.SCLLMDSC.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.get_latent_representation(), z)
    np.testing.assert_array_equal(loaded.predict(), labels)


def test_load_onto_fresh_data_rebuilds_the_same_setup(counts, tmp_path):
    a = counts.copy()
    semantic_standin(a)
    sd.model.SCLLMDSC.setup_anndata(a, n_pcs=10, n_top_genes=200)
    model = sd.model.SCLLMDSC(a, n_clusters=3, n_latent=8, n_hidden=16)
    model.train(max_epochs=2, batch_size=64, random_state=0, enable_progress_bar=False)
    model.save(tmp_path / "m")
    fresh = counts.copy()  # the same cells, never set up
    semantic_standin(fresh)
    before = adata_fingerprint(fresh)
    loaded = sd.model.SCLLMDSC.load(tmp_path / "m", adata=fresh)
    assert_only_added(before, fresh, **SETUP_OUT)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
    np.testing.assert_array_equal(loaded.predict(), model.predict())
