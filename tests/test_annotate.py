"""sd.tl.annotate_clusters (marker knowledge, evidence) and sd.pl.annotation, on synthetic data.

The knowledge is a tiny gene text table and alias table written to a temporary folder, so
nothing here needs ``../shared``; the Cell Ontology comes (offline) with
``cellxgene-ontology-guide``.
"""

from __future__ import annotations

import gzip

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

pytest.importorskip("cellxgene_ontology_guide")

from scllm_dsc.knowledge._cell_markers import (  # noqa: E402
    CellOntology,
    SymbolResolver,
    parse_ontology_markers,
    to_human,
)
from scllm_dsc.pl._annotation import annotation as plot_annotation  # noqa: E402
from scllm_dsc.tl._annotate import annotate_clusters, cluster_effects  # noqa: E402
from scllm_dsc.tl._candidates import ontology_candidates, user_candidates  # noqa: E402

TEXTS = {
    "CD19": ("CD19 molecule", "This gene encodes a cell surface molecule of B cells that "
             "assembles with the antigen receptor of B lymphocytes."),
    "MS4A1": ("membrane spanning 4-domains A1", "This gene encodes a surface molecule "
              "expressed on B cells."),
    "CD79A": ("CD79a molecule", "Part of the B-cell antigen receptor complex."),
    "CD3E": ("CD3 epsilon subunit of T-cell receptor complex", "Part of the T-cell "
             "receptor complex; it is expressed by T cells."),
    "CD3D": ("CD3 delta subunit of T-cell receptor complex", "Found on T lymphocytes."),
    "CD4": ("CD4 molecule", "A membrane glycoprotein of helper lymphocytes."),
    "CD14": ("CD14 molecule", "A surface antigen expressed on monocytes."),
    "LYZ": ("lysozyme", "Lysozyme found in monocytes."),
}
MARKERS = {"B": ["CD19", "MS4A1", "CD79A"], "T": ["CD3E", "CD3D"], "mono": ["CD14", "LYZ"]}
BACKGROUND = [f"GENE{i}" for i in range(40)]
CANDS = ["B cell", "T cell", "monocyte", "CD4-positive, alpha-beta T cell"]


@pytest.fixture(scope="module")
def knowledge(tmp_path_factory):
    folder = tmp_path_factory.mktemp("knowledge")
    rows = [(s, f"{s}: {n}. {t}", n) for s, (n, t) in TEXTS.items()]
    rows += [(g, f"{g}: uncharacterized protein {g[4:]}.", f"uncharacterized protein {g[4:]}")
             for g in BACKGROUND]
    path = folder / "human_gene_text.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("symbol\ttext\tfull_name\n")
        fh.writelines(f"{s}\t{t}\t{n}\n" for s, t, n in rows)
    with gzip.open(folder / "human_alias_to_symbol.tsv.gz", "wt") as fh:
        fh.write("alias\tsymbol\tambiguous\nB1\tMS4A1\tFalse\nLEU12\tCD19\tFalse\n")
    return str(path)


def planted(seed: int = 0, mystery: bool = True) -> ad.AnnData:
    """Negative-binomial counts; clusters B, T and mono up-regulate their markers, and a
    "mystery" cluster up-regulates only genes no candidate knows."""
    rng = np.random.default_rng(seed)
    genes = [g for gs in MARKERS.values() for g in gs] + ["CD4"] + BACKGROUND
    sizes = {"B": 40, "T": 60, "mono": 30}
    if mystery:
        sizes["mystery"] = 25
    blocks, labels = [], []
    for c, n in sizes.items():
        mu = np.full(len(genes), 1.0)
        up = MARKERS.get(c, BACKGROUND[:5])
        mu[[genes.index(g) for g in up]] = 20.0
        blocks.append(rng.negative_binomial(5, 5 / (5 + mu), size=(n, len(genes))))
        labels += [c] * n
    X = sparse.csr_matrix(np.vstack(blocks).astype(np.float32))
    a = ad.AnnData(X=X, var=pd.DataFrame(index=genes))
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.obs["cluster"] = pd.Categorical(labels)
    return a


def _annotate(a, knowledge, **kw):
    kw.setdefault("candidates", CANDS)
    kw.setdefault("sources", ["CL", "gene text"])
    annotate_clusters(a, key="cluster", species="human", knowledge=knowledge, **kw)
    return a.uns["cluster_annotation"]


def test_planted_b_cell_with_evidence(knowledge):
    a = planted()
    res = _annotate(a, knowledge)
    assigned = res["assigned"].set_index("cluster")["name"]
    assert assigned["B"] == "B cell"
    assert assigned["T"] == "T cell"
    assert assigned["mono"] == "monocyte"
    assert (a.obs.loc[a.obs["cluster"] == "B", "cluster_annotation"] == "B cell").all()
    ev = res["evidence"]
    b = ev[(ev["cluster"] == "B") & (ev["rank"] == 1) & (ev["marker"] == "positive")]
    assert set(b["gene"]) == {"CD19", "MS4A1", "CD79A"}
    assert (b["term_id"] == "CL:0000236").all()
    assert (b["effect_size"] > 1).all() and (b["log_fold_change"] > 0).all()
    assert (b["pct_in"] > b["pct_out"]).all()
    assert (b["source"] == "gene text").all()
    assert b["statement"].str.contains("B cell|B-cell|B lymph", regex=True).all()
    top = res["ranking"].query("rank == 1").set_index("cluster")
    assert top.loc["B", "term_id"] == "CL:0000236"
    assert set(top.loc["B", "supporting_genes"].split(", ")) == {"CD19", "MS4A1", "CD79A"}


def test_nothing_invented_without_support(knowledge):
    a = planted()
    res = _annotate(a, knowledge)
    assert res["assigned"].set_index("cluster")["name"]["mystery"] == "unassigned"
    assert (a.obs.loc[a.obs["cluster"] == "mystery", "cluster_annotation"] == "unassigned").all()
    assert "mystery" not in set(res["ranking"]["cluster"])
    assert "mystery" not in set(res["evidence"]["cluster"])


def test_every_suggestion_has_evidence(knowledge):
    a = planted()
    res = _annotate(a, knowledge, n_top=3)
    r, ev = res["ranking"], res["evidence"]
    assert len(r) > 0
    for row in r.itertuples():
        e = ev[(ev["cluster"] == row.cluster) & (ev["rank"] == row.rank)]
        assert len(e) > 0, (row.cluster, row.name)
        assert (e["term_id"] == row.term_id).all()
        assert e["source"].str.len().gt(0).all() and e["statement"].str.len().gt(0).all()
        assert set(e["gene"]) <= set(a.var_names)
    for _, df in r.groupby("cluster"):
        assert df["rank"].tolist() == list(range(1, len(df) + 1))


def test_parent_preferred_over_unsupported_child(knowledge):
    """The T cluster does not express CD4 (the child's own marker): 'T cell', not the child."""
    a = planted(mystery=False)
    res = _annotate(a, knowledge, n_top=3)
    r = res["ranking"]
    t = r[r["cluster"] == "T"]
    assert t["name"].iat[0] == "T cell"
    assert "CL:0000624" not in set(t["term_id"])


def test_mod_with_mudata(knowledge):
    md = pytest.importorskip("mudata")
    a = planted()
    prot = ad.AnnData(X=np.ones((a.n_obs, 2), dtype=np.float32),
                      obs=pd.DataFrame(index=a.obs_names))
    mdata = md.MuData({"rna": a, "prot": prot})
    annotate_clusters(mdata, key="cluster", mod="rna", candidates=CANDS,
                      sources=["CL", "gene text"], species="human", knowledge=knowledge)
    res = mdata.mod["rna"].uns["cluster_annotation"]
    assert res["assigned"].set_index("cluster")["name"]["B"] == "B cell"
    assert "cluster_annotation" in mdata.mod["rna"].obs
    with pytest.raises(KeyError, match="modality"):
        annotate_clusters(mdata, key="cluster", mod="atac", candidates=CANDS,
                          knowledge=knowledge)
    with pytest.raises(ValueError, match="mod"):
        annotate_clusters(planted(), key="cluster", mod="rna", knowledge=knowledge)


def test_copy_key_added_and_rest_unchanged(knowledge):
    a = planted()
    before = a.copy()
    out = annotate_clusters(a, key="cluster", candidates=CANDS, sources=["CL", "gene text"],
                            species="human", knowledge=knowledge, copy=True,
                            key_added="names")
    assert "names" not in a.obs and "names" not in a.uns
    assert "names" in out.obs and "names" in out.uns
    assert isinstance(out.obs["names"].dtype, pd.CategoricalDtype)
    assert (a.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(out.obs[before.obs.columns], before.obs)
    params = out.uns["names"]["params"]
    assert params["method"] == "markers" and params["sources"] == ["CL", "gene text"]


def test_within_preset_and_unknown_candidates(knowledge):
    a = planted()
    res = _annotate(a, knowledge, candidates=None, within="CL:0000988")  # hematopoietic
    hemato = set(ontology_candidates("CL:0000988")["term_id"])
    assert set(res["ranking"]["term_id"]) <= hemato
    # names in the dataset's style are rewritten and looked up in the ontology
    res = _annotate(planted(), knowledge, candidates=["B cells", "CD14+ Monocytes", "B cell"])
    assert set(res["ranking"]["term_id"]) <= {"CL:0000236", "CL:0001054"}
    with pytest.raises(ValueError, match="No candidate"):
        _annotate(planted(), knowledge, candidates=[])
    with pytest.raises(ValueError, match="either"):
        _annotate(planted(), knowledge, within="immune")


def test_bad_arguments(knowledge):
    a = planted()
    with pytest.raises(KeyError, match=r"sd\.tl\.cluster"):
        annotate_clusters(a, knowledge=knowledge)
    with pytest.raises(ValueError, match="n_top"):
        _annotate(a, knowledge, n_top=0)
    with pytest.raises(ValueError, match="method"):
        _annotate(a, knowledge, method="magic")
    with pytest.raises(ValueError, match="marker sources"):
        _annotate(a, knowledge, sources=["CL", "astrology"])
    with pytest.raises(TypeError, match="similarity"):
        _annotate(a, knowledge, method="markers", n_markers=5)
    # descriptions (a dict) or similarity options select the text-similarity method
    with pytest.raises(KeyError, match=r"sd\.tl\.embed_genes"):
        annotate_clusters(a, key="cluster", candidates={"B cell": "b", "T cell": "t"})
    with pytest.raises(KeyError, match=r"sd\.tl\.embed_genes"):
        annotate_clusters(a, key="cluster", candidates=CANDS, n_background=20)
    # the earlier text-similarity method still needs gene embeddings
    with pytest.raises(KeyError, match=r"sd\.tl\.embed_genes"):
        annotate_clusters(a, key="cluster", candidates=CANDS, method="similarity")
    a.X = a.X.copy()
    a.X.data[:] = -1.0
    with pytest.raises(ValueError, match="negative"):
        _annotate(a, knowledge)
    assert "cluster_annotation" not in a.uns


def test_cluster_effects_values():
    X = sparse.csr_matrix(np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
    e = cluster_effects(X, np.array([0, 0, 1, 1]), 2, eps=0.0 + 1e-12)
    assert e["lfc"][0, 0] == pytest.approx(2.0)
    assert e["pct_in"][0].tolist() == [1.0, 0.0]
    assert e["pct_out"][0].tolist() == [0.0, 1.0]
    assert e["d"][0, 0] > 100 and e["d"][1, 0] < -100


@pytest.mark.parametrize(("s_b", "b_parent", "top", "expected"), [
    (0.95, "CL:P", 1.0, ["CL:P", "CL:A", "CL:B"]),  # siblings nearly tied: their parent
    (0.50, "CL:P", 1.0, ["CL:A", "CL:B", "CL:P"]),  # a clear winner keeps its name
    (0.95, "CL:A", 1.0, ["CL:A", "CL:B", "CL:P"]),  # the runner-up is the winner's child
    # the first suggestion climbed from a term scoring 1.5: the runner-up is not tied
    (0.95, "CL:P", 1.5, ["CL:A", "CL:B", "CL:P"]),
])
def test_near_tie_named_by_common_parent(s_b, b_parent, top, expected):
    from scllm_dsc.tl._annotate import _common_parent

    cl = CellOntology(label={t: t for t in ("CL:P", "CL:A", "CL:B")}, synonyms={},
                      definition={}, parents={"CL:P": [], "CL:A": ["CL:P"], "CL:B": [b_parent]})
    tindex = {"CL:A": 0, "CL:B": 1, "CL:P": 2}
    s_row = np.array([1.0, s_b, 0.6])
    d_row = np.array([2.0])
    effs = {t: {(0, 1): (1.0, [], 0)} for t in tindex}
    chosen = _common_parent(["CL:A", "CL:B", "CL:P"], s_row, d_row, tindex, effs, cl, tie=0.2,
                            steps=2, min_score=0.25, top=top)
    assert chosen == expected


def test_parse_markers_from_ontology_text():
    cl = CellOntology(
        label={"CL:1": "CD14-positive monocyte",
               "CL:2": "CD16-positive, CD56-dim natural killer cell",
               "CL:3": "type B pancreatic cell", "CL:4": "dorsal root ganglion Nav1.7 neuron"},
        synonyms={},
        definition={
            "CL:1": "A monocyte that expresses CD14 and is negative for the lineage markers "
                    "CD3, CD19, and CD20.",
            "CL:2": "A natural killer cell.",
            "CL:3": "A cell that secretes insulin and is located in the islets.",
            "CL:4": "A neuron that expresses the sodium channel Nav1.7 (encoded by SCN9A).",
        },
        parents={"CL:1": [], "CL:2": [], "CL:3": [], "CL:4": []},
    )
    res = SymbolResolver(["CD14", "CD19", "CD3E", "MS4A1", "FCGR3A", "NCAM1", "INS", "NAV1",
                          "SCN9A"], aliases={}, full_names={"insulin": "INS"})
    links = {(m.term_id, m.gene, m.sign) for m in parse_ontology_markers(cl, res)}
    assert {("CL:1", "CD14", 1), ("CL:1", "CD3E", -1), ("CL:1", "CD19", -1),
            ("CL:1", "MS4A1", -1)} <= links
    assert ("CL:1", "CD19", 1) not in links
    assert {("CL:2", "FCGR3A", 1), ("CL:2", "NCAM1", -1), ("CL:3", "INS", 1)} <= links
    # a dotted channel name is one word (Nav1.7 = SCN9A), not the gene NAV1
    assert ("CL:4", "SCN9A", 1) in links and ("CL:4", "NAV1", 1) not in links
    by = {(m.term_id, m.gene): m for m in parse_ontology_markers(cl, res)}
    assert by[("CL:2", "NCAM1")].weight == 0.5  # "dim": weakly absent
    assert "CD14-positive monocyte" in by[("CL:1", "CD14")].text


def test_clusters_given_one_name_keep_their_own_best_terms():
    from scllm_dsc.tl._annotate import _distinct

    picks = [["CL:P", "CL:A"], ["CL:P", "CL:B"], ["CL:P"], ["CL:D"], ["CL:D"], []]
    firsts = ["CL:A", "CL:B", "CL:P", "CL:E", "CL:E", None]
    out = _distinct(picks, firsts)
    # the first two climbed from different terms: they get those back; the third's own
    # best is the shared name; the two clusters with the same own best keep the parent
    assert [p[0] if p else None for p in out] == ["CL:A", "CL:B", "CL:P", "CL:D", "CL:D",
                                                  None]
    assert out[0] == ["CL:A", "CL:P"] and picks[0] == ["CL:P", "CL:A"]  # input untouched
    assert _distinct([["CL:P"]], ["CL:A"]) == [["CL:P"]]  # a name of its own: kept


def test_parse_secreted_products_named_before_the_verb():
    cl = CellOntology(
        label={"CL:1": "pancreatic epsilon cell", "CL:2": "pancreatic D cell",
               "CL:3": "cytokine secreting effector T cell"},
        synonyms={"CL:2": ["somatostatin-secreting pancreatic cell"]},
        definition={"CL:1": "Ghrelin secreting cells found in the endocrine pancreas.",
                    "CL:2": "A D cell located in the pancreas; contains somatostatin.",
                    "CL:3": "An effector T cell."},
        parents={"CL:1": [], "CL:2": [], "CL:3": []},
    )
    res = SymbolResolver(["GHRL", "SST", "IFNG"], aliases={},
                         full_names={"ghrelin": "GHRL", "somatostatin": "SST"})
    links = parse_ontology_markers(cl, res)
    by = {(m.term_id, m.gene): m for m in links}
    assert set(by) == {("CL:1", "GHRL"), ("CL:2", "SST")}  # "cytokine" names no gene
    assert by[("CL:1", "GHRL")].sign == 1 and by[("CL:1", "GHRL")].weight == 1.0
    assert "Ghrelin secreting" in by[("CL:1", "GHRL")].text


def test_terms_of_the_other_species_left_out():
    from scllm_dsc.tl._annotate import _other_species

    assert _other_species("CD27-low, CD11b-high natural killer cell, mouse", "human")
    assert _other_species("L5 extratelencephalic projecting neuron (Homo sapiens)", "mouse")
    assert _other_species("Lugaro cell (Mmus)", "human")
    assert _other_species("lamellocyte (sensu Arthropoda)", "mouse")
    assert not _other_species("striatal SST GABAergic interneuron (Primate)", "human")
    assert not _other_species("CD16-positive, CD56-dim natural killer cell, human", "human")
    assert not _other_species("natural killer cell", "mouse")


def test_rarely_reported_terms_penalised(knowledge, monkeypatch):
    """Scores drop by ``rarity`` per decade of marker lists below ``common``, only with the
    marker database among the sources."""
    pytest.importorskip("cellconsensus")
    import scllm_dsc.knowledge._cell_markers as cm
    from scllm_dsc.tl._annotate import _rarity, marker_annotation

    n = {"CL:1": 0, "CL:2": 4, "CL:3": 9, "CL:4": 500}
    monkeypatch.setattr(cm, "consensus_sources", lambda terms: {t: n[t] for t in terms})
    assert _rarity(list(n), common=10) == pytest.approx([1.0, np.log10(2), 0.0, 0.0])
    monkeypatch.undo()

    a = planted()
    terms = ["CL:0000236", "CL:0000084", "CL:0000576", "CL:0000624"]
    kw = {"terms": terms, "species": "human", "knowledge": knowledge}
    _, flat = marker_annotation(a, "cluster", sources=["CL", "cellconsensus"], rarity=0.0, **kw)
    _, prior = marker_annotation(a, "cluster", sources=["CL", "cellconsensus"], rarity=0.5,
                                 common=400, **kw)
    cols = list(prior["scores"].columns)
    expected = flat["scores"][cols] - 0.5 * _rarity(cols, 400)[None, :]
    np.testing.assert_allclose(prior["scores"].to_numpy(), expected.to_numpy())
    assert (_rarity(cols, 400) > 0).any()
    _, text = marker_annotation(a, "cluster", sources=["CL", "gene text"], rarity=0.0, **kw)
    _, text_prior = marker_annotation(a, "cluster", sources=["CL", "gene text"], rarity=0.5,
                                      common=400, **kw)
    pd.testing.assert_frame_equal(text["scores"], text_prior["scores"])
    assert prior["assigned"].set_index("cluster")["name"]["B"] == "B cell"


def test_mouse_symbols_to_human():
    h = to_human(["Cd19", "Ms4a1", "Gene.1"], "mouse", {"Cd19": "CD19"})
    assert h.tolist() == ["CD19", "MS4A1", "GENE"]
    assert to_human(["CD19"], "human").tolist() == ["CD19"]


def test_user_candidates_table():
    df = user_candidates(["B cell", "my odd cell", "CL:0000623"])
    assert df["name"].tolist() == ["B cell", "my odd cell", "natural killer cell"]
    assert df["term_id"].tolist() == ["CL:0000236", "", "CL:0000623"]
    with pytest.raises(ValueError, match="unique"):
        user_candidates(["B cell", "B cell"])
    with pytest.raises(TypeError, match="within="):
        user_candidates("B cell")


def test_ontology_subsets():
    by_id = ontology_candidates("CL:0000988")
    preset = ontology_candidates("immune")
    assert by_id["term_id"].tolist() == preset["term_id"].tolist()
    assert {"CL:0000236", "CL:0000623", "CL:0000988"} <= set(by_id["term_id"])
    assert "CL:0000169" not in set(by_id["term_id"])
    pancreas = set(ontology_candidates("pancreas")["term_id"])
    assert {"CL:0000169", "CL:0000171", "CL:0002064", "CL:0000115"} <= pancreas
    brain = ontology_candidates("brain").set_index("term_id")["name"]
    assert {"CL:4023060", "CL:0000127", "CL:0000128", "CL:0000099"} <= set(brain.index)
    # the eye and the peripheral nervous system are left out
    assert not {"CL:0000740", "CL:0000604", "CL:0000107"} & set(brain.index)
    assert not brain.str.contains("retina|dorsal root", case=False).any()
    with pytest.raises(ValueError, match="preset"):
        ontology_candidates("no such cell type")


def test_plot_reads_only(knowledge, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = planted()
    with pytest.raises(KeyError, match="annotate_clusters"):
        plot_annotation(a, key="cluster", show=False)
    _annotate(a, knowledge)
    before_obs, before_uns = a.obs.copy(), set(a.uns)
    before_ev = a.uns["cluster_annotation"]["evidence"].copy()
    dp = plot_annotation(a, key="cluster", n_genes=2, return_fig=True)
    names = list(dp.var_groups.labels)
    assert "B cell" in names and "unassigned" not in names
    assert set(dp.var_names) <= set(a.var_names)
    pd.testing.assert_frame_equal(a.obs, before_obs)
    assert set(a.uns) == before_uns
    pd.testing.assert_frame_equal(a.uns["cluster_annotation"]["evidence"], before_ev)
    plt.close("all")


def test_within_none_narrows_from_data(knowledge):
    a = planted()
    res = _annotate(a, knowledge, candidates=None, within=None)
    assert "hematopoietic cell" in res["params"]["lineages"]
    hemato = set(ontology_candidates("CL:0000988")["term_id"])
    assert set(res["ranking"]["term_id"]) <= hemato
    assert res["assigned"].set_index("cluster")["name"]["mystery"] == "unassigned"


@pytest.mark.parametrize("installed", [True, False])
def test_default_sources_prefer_the_marker_database(knowledge, monkeypatch, installed):
    import scllm_dsc.knowledge._cell_markers as cm
    from scllm_dsc.tl._annotate import default_sources

    monkeypatch.setattr(cm, "consensus_available", lambda: installed)
    expected = ["CL", "cellconsensus"] if installed else ["CL", "gene text"]
    assert default_sources() == expected
    if not installed:  # gene-text links fill in without the database
        a = planted()
        annotate_clusters(a, key="cluster", candidates=CANDS, species="human",
                          knowledge=knowledge)
        assert a.uns["cluster_annotation"]["params"]["sources"] == expected
        assigned = a.uns["cluster_annotation"]["assigned"].set_index("cluster")["name"]
        assert assigned["B"] == "B cell"


def test_child_with_its_own_markers_up_keeps_its_name():
    """The climb to an ancestor is vetoed when the markers the child has beyond it are up."""
    from scllm_dsc.tl._annotate import _specific

    parent = {(0, 1): (1.0, [], 0)}
    child = {(0, 1): (1.0, [], 1), (1, 1): (1.0, [], 0), (2, -1): (1.0, [], 0)}
    up, flat = np.array([2.0, 2.0, 0.0]), np.array([2.0, 0.0, 0.0])
    assert _specific(child, parent, up, shrink=1.0, threshold=0.5)  # 2 * 1 / (1 + 1) = 1
    assert not _specific(child, parent, flat, shrink=1.0, threshold=0.5)
    assert not _specific(parent, parent, up, shrink=1.0, threshold=0.5)  # nothing beyond
    assert not _specific(child, parent, up, shrink=1.0, threshold=None)
