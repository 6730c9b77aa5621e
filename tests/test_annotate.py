"""sd.tl.annotate_clusters and sd.pl annotation plot, on the shared PBMC68k cells."""

from __future__ import annotations

import builtins

import numpy as np
import pandas as pd
import pytest
from conftest import read_dataset, synthetic

import scllm_dsc as sd
from scllm_dsc.pl._annotation import annotation as plot_annotation
from scllm_dsc.tl import _candidates
from scllm_dsc.tl._annotate import annotate_clusters
from scllm_dsc.tl._candidates import ontology_candidates, user_candidates

IMMUNE = ["B cell", "T cell", "monocyte", "natural killer cell"]


@pytest.fixture(scope="module")
def pbmc_embedded(human_table):
    adata = read_dataset("PBMC68k_reduced_700")
    sd.tl.embed_genes(adata, knowledge=human_table, species="human")
    return adata


@pytest.fixture
def pbmc(pbmc_embedded):
    return pbmc_embedded.copy()


def _ranked(adata, key="cell_type"):
    r = adata.uns[f"{key}_annotation"]["ranking"]
    return r


@pytest.mark.shared
def test_b_cell_cluster_named_b_cell(pbmc):
    annotate_clusters(pbmc, key="cell_type", candidates=IMMUNE)
    r = _ranked(pbmc)
    top = r[r["rank"] == 1].set_index("cluster")["name"]
    assert top["CD19+ B"] == "B cell"
    assert top["CD56+ NK"] == "natural killer cell"
    assert top["CD14+ Monocyte"] == "monocyte"
    # the cell-level label follows the cluster
    b = pbmc.obs["cell_type"] == "CD19+ B"
    assert (pbmc.obs.loc[b, "cell_type_annotation"] == "B cell").all()
    # list names that are CL labels get the term's text
    cand = pbmc.uns["cell_type_annotation"]["candidates"].set_index("name")
    assert cand.loc["B cell", "term_id"] == "CL:0000236"
    assert "B lymphocyte" in cand.loc["B cell", "text"]


@pytest.mark.shared
def test_deterministic(pbmc):
    a, b = pbmc.copy(), pbmc.copy()
    annotate_clusters(a, key="cell_type", candidates=IMMUNE, de_method="t-test", random_state=3)
    annotate_clusters(b, key="cell_type", candidates=IMMUNE, de_method="t-test", random_state=3)
    pd.testing.assert_frame_equal(_ranked(a), _ranked(b))
    pd.testing.assert_frame_equal(
        a.uns["cell_type_annotation"]["scores"], b.uns["cell_type_annotation"]["scores"]
    )
    assert a.obs["cell_type_annotation"].equals(b.obs["cell_type_annotation"])


@pytest.mark.shared
def test_keys_written_rest_unchanged(pbmc):
    before = pbmc.copy()
    annotate_clusters(pbmc, key="cell_type", candidates=IMMUNE, n_top=2, de_method="t-test")
    assert set(pbmc.obs.columns) - set(before.obs.columns) == {"cell_type_annotation"}
    assert set(pbmc.uns) - set(before.uns) == {"cell_type_annotation"}
    assert (pbmc.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(pbmc.var, before.var)
    pd.testing.assert_frame_equal(pbmc.obs[before.obs.columns], before.obs)
    np.testing.assert_array_equal(pbmc.varm["gene_text"], before.varm["gene_text"])
    np.testing.assert_array_equal(pbmc.obsm["X_gene_text"], before.obsm["X_gene_text"])
    assert list(pbmc.layers) == list(before.layers)

    res = pbmc.uns["cell_type_annotation"]
    r = res["ranking"]
    n_clusters = pbmc.obs["cell_type"].nunique()
    assert len(r) == 2 * n_clusters
    assert set(r.columns) >= {"cluster", "rank", "name", "term_id", "score", "marker_score",
                              "centroid_score", "n_cells"}
    assert res["scores"].shape == (n_clusters, len(IMMUNE))
    # scores in the table are sorted within each cluster
    for _, df in r.groupby("cluster"):
        assert df["score"].is_monotonic_decreasing
    assert res["params"]["model"] == pbmc.uns["gene_text"]["params"]["model"]
    assert all(len(v) > 0 for v in res["markers"].values())
    assert isinstance(pbmc.obs["cell_type_annotation"].dtype, pd.CategoricalDtype)


@pytest.mark.shared
def test_copy_and_key_added(pbmc):
    out = annotate_clusters(pbmc, key="cell_type", candidates=IMMUNE, copy=True,
                            key_added="names", use_markers=False)
    assert "names" not in pbmc.obs and "names" not in pbmc.uns
    assert "names" in out.obs and "names" in out.uns
    assert np.isnan(out.uns["names"]["ranking"]["marker_score"]).all()


@pytest.mark.shared
def test_dict_candidates(pbmc):
    cands = {
        "plasmablast-like": "antibody secreting cell expressing immunoglobulin genes",
        "cytotoxic lymphocyte": "kills infected cells with perforin and granzymes",
        "phagocyte": "engulfs bacteria, expresses lysozyme",
    }
    annotate_clusters(pbmc, key="cell_type", candidates=cands, de_method="t-test")
    res = pbmc.uns["cell_type_annotation"]
    assert set(res["ranking"]["name"]) <= set(cands)
    assert list(res["scores"].columns) == list(cands)
    c = res["candidates"].set_index("name")
    assert c.loc["phagocyte", "text"] == "phagocyte. engulfs bacteria, expresses lysozyme"
    assert (c["term_id"] == "").all()
    top = res["ranking"].query("rank == 1").set_index("cluster")["name"]
    assert top["CD56+ NK"] == "cytotoxic lymphocyte"


def test_user_candidates_table():
    df = user_candidates(["B cell", "my odd cell", "CL:0000623"])
    assert df["name"].tolist() == ["B cell", "my odd cell", "natural killer cell"]
    assert df["term_id"].tolist() == ["CL:0000236", "", "CL:0000623"]
    assert df["text"].iat[1] == "my odd cell"
    with pytest.raises(ValueError, match="unique"):
        user_candidates(["B cell", "B cell"])
    with pytest.raises(ValueError, match="at least two"):
        user_candidates(["B cell"])
    with pytest.raises(TypeError, match="within="):
        user_candidates("B cell")


def test_ontology_subsets():
    by_id = ontology_candidates("CL:0000988")
    by_label = ontology_candidates("hematopoietic cell")
    preset = ontology_candidates("immune")
    assert by_id["term_id"].tolist() == by_label["term_id"].tolist() == preset["term_id"].tolist()
    assert {"CL:0000236", "CL:0000623", "CL:0000988"} <= set(by_id["term_id"])
    assert "CL:0000169" not in set(by_id["term_id"])  # beta cell is not hematopoietic
    pancreas = set(ontology_candidates("pancreas")["term_id"])
    assert {"CL:0000169", "CL:0000171", "CL:0002064", "CL:0000115"} <= pancreas
    union = set(ontology_candidates(["CL:0000236", "CL:0000623"])["term_id"])
    assert {"CL:0000236", "CL:0000623"} <= union
    assert ontology_candidates()["name"].is_unique
    with pytest.raises(ValueError, match="preset"):
        ontology_candidates("no such cell type")


@pytest.mark.shared
def test_ontology_candidates_rank(pbmc):
    """Ranking among the CL hematopoietic subtree: the B-cell cluster gets a B-cell term."""
    annotate_clusters(pbmc, key="cell_type", within="CL:0000236", de_method="t-test")
    r = _ranked(pbmc)
    assert set(r["term_id"]) <= set(ontology_candidates("CL:0000236")["term_id"])
    assert pbmc.uns["cell_type_annotation"]["params"]["within"] == "CL:0000236"


@pytest.mark.shared
def test_missing_extra_clear_error(pbmc, monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("cellxgene_ontology_guide"):
            raise ImportError("No module named 'cellxgene_ontology_guide'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(_candidates, "_PARSER", {})
    before = set(pbmc.obs.columns), set(pbmc.uns)
    with pytest.raises(ImportError, match=r'pip install "scllm-dsc\[ontology\]"') as err:
        annotate_clusters(pbmc, key="cell_type")
    assert "candidates=" in str(err.value)
    assert (set(pbmc.obs.columns), set(pbmc.uns)) == before
    # a user's list still works without the package (names embedded as they are)
    df = user_candidates(["B cell", "T cell"])
    assert df["term_id"].tolist() == ["", ""]
    assert df["text"].tolist() == ["B cell", "T cell"]


def test_missing_gene_text_names_embed_genes():
    adata = synthetic()
    with pytest.raises(KeyError, match=r"sd\.tl\.embed_genes"):
        annotate_clusters(adata, key="cell_type", candidates=IMMUNE)
    with pytest.raises(KeyError, match=r"sd\.tl\.cluster"):
        annotate_clusters(adata, candidates=IMMUNE)


@pytest.mark.shared
def test_bad_arguments(pbmc):
    with pytest.raises(ValueError, match="either"):
        annotate_clusters(pbmc, key="cell_type", candidates=IMMUNE, within="immune")
    with pytest.raises(ValueError, match="marker_weight"):
        annotate_clusters(pbmc, key="cell_type", candidates=IMMUNE, marker_weight=2)
    with pytest.raises(ValueError, match="n_top"):
        annotate_clusters(pbmc, key="cell_type", candidates=IMMUNE, n_top=0)
    pbmc.X = pbmc.X.copy()
    pbmc.X.data[:] = -1.0
    with pytest.raises(ValueError, match="negative"):
        annotate_clusters(pbmc, key="cell_type", candidates=IMMUNE)
    assert "cell_type_annotation" not in pbmc.uns


@pytest.mark.shared
def test_plot(pbmc, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    with pytest.raises(KeyError, match="annotate_clusters"):
        plot_annotation(pbmc, key="cell_type", show=False)
    annotate_clusters(pbmc, key="cell_type", candidates=IMMUNE, de_method="t-test")
    fig = plot_annotation(pbmc, key="cell_type", n_top=2, return_fig=True)
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == pbmc.obs["cell_type"].nunique()
    assert {t.get_text() for t in ax.get_xticklabels()} <= set(IMMUNE)
    out = tmp_path / "ann.png"
    ax2 = plot_annotation(pbmc, key="cell_type", save=str(out), show=False)
    assert out.exists() and ax2 is not None
    import matplotlib.pyplot as plt

    plt.close("all")
