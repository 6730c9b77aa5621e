"""Bad input: each case gets a clear error (what is wrong and what to do) or a documented
handling, and the input AnnData is left as it was (apart from documented outputs)."""

from __future__ import annotations

import gzip
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from _helpers import (
    CELL_SENTENCES_OUT,
    CLUSTER_OUT,
    EMBED_GENES_OUT,
    FAST,
    adata_fingerprint,
    assert_only_added,
    merge,
    scanpy_warnings,
    semantic_standin,
    tiny_knowledge,
)
from _tiny_models import tiny_bert
from conftest import synthetic
from scipy import sparse

import scllm_dsc as sd

torch.set_num_threads(1)


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full():
    """700 synthetic cells x 300 genes (raw counts, CSR float32)."""
    a = synthetic(700, 300)
    del a.obs["cell_type"]
    return a


@pytest.fixture
def pbmc(full):
    """200 cells x 300 genes, a fresh copy per test."""
    return full[:200].copy()


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return str(tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert"))


@pytest.fixture(scope="module")
def know(full):
    return tiny_knowledge(full.var_names)


@pytest.fixture(scope="module")
def reference_labels(full):
    """Structural-only labels of the 200-cell slice, for comparison across input types."""
    a = full[:200].copy()
    sd.tl.cluster(a, n_clusters=3, use_semantic=False, **FAST)
    return a.obs["scllm_dsc"].to_numpy(), a.obsm["X_scllm_dsc"]


def embed(a, bert, know, **kw):
    kw.setdefault("species", "human")
    return sd.tl.embed_genes(a, know, model=bert, **kw)


def lognorm(a):
    import scanpy as sc

    b = a.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    return b


def _tools(bert, know):
    """Every entry point that reads expression, as ``name -> call(adata)``."""
    return {
        "embed_genes": lambda a: embed(a, bert, know),
        "cell_sentences": lambda a: sd.tl.cell_sentences(a, model=bert),
        "cluster": lambda a: sd.tl.cluster(a, n_clusters=3, use_semantic=False, **FAST),
        "setup_anndata": lambda a: sd.model.SCLLMDSC.setup_anndata(a, semantic_keys=None),
        "build_graph": lambda a: sd.graph.build_graph(a),
    }


TOOLS = ["embed_genes", "cell_sentences", "cluster", "setup_anndata", "build_graph"]


# -- expression values --------------------------------------------------------------------------
def test_log_normalised_x_without_counts(pbmc, bert, know):
    """Tools that can use normalised values do so (with a warning where it matters); the
    count model asks for the counts layer and names the layers there are."""
    a = lognorm(pbmc)
    before = adata_fingerprint(a)
    with scanpy_warnings() as warned:
        embed(a, bert, know)
    assert any("does not look like raw counts" in m and "layer=" in m for m in warned), warned
    assert a.uns["gene_text"]["params"]["weights"] == "values"
    assert_only_added(before, a, **EMBED_GENES_OUT)

    # cell sentences rank genes within a cell: log-normalisation keeps that order
    sd.tl.cell_sentences(a, embed=False)
    ref = pbmc.copy()
    sd.tl.cell_sentences(ref, embed=False)
    assert a.obs["cell_sentence"].tolist() == ref.obs["cell_sentence"].tolist()

    b = lognorm(pbmc)
    b.layers["spliced"] = b.X.copy()
    before = adata_fingerprint(b)
    with pytest.raises(ValueError, match="raw counts") as err:
        sd.tl.cluster(b, n_clusters=3, use_semantic=False, **FAST)
    assert "layer=" in str(err.value) and "'spliced'" in str(err.value)
    with pytest.raises(ValueError, match=r"raw counts.*layer="):
        sd.model.SCLLMDSC.setup_anndata(b, semantic_keys=None)
    assert adata_fingerprint(b) == before


@pytest.mark.parametrize("tool", TOOLS)
def test_negative_values(pbmc, bert, know, tool):
    import scanpy as sc

    a = lognorm(pbmc)
    sc.pp.scale(a)  # z-scores: negative values
    before = adata_fingerprint(a)
    with pytest.raises(ValueError, match="negative") as err:
        _tools(bert, know)[tool](a)
    assert "layer=" in str(err.value)
    assert adata_fingerprint(a) == before


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_nan_and_inf(pbmc, bert, know, tool, value, dense):
    X = pbmc.X.toarray()
    X[150, 7] = value
    X[151, 8] = value
    pbmc.X = X if dense else sparse.csr_matrix(X)
    before = adata_fingerprint(pbmc)
    with pytest.raises(ValueError, match="2 NaN or infinite values") as err:
        _tools(bert, know)[tool](pbmc)
    assert "nan_to_num" in str(err.value) and "layer=" in str(err.value)
    assert adata_fingerprint(pbmc) == before


def test_bad_value_after_the_first_500_rows_is_found(full, bert, know):
    """The count heuristic reads 500 rows; NaN and negative values are looked for in all."""
    a = full.copy()
    X = a.X.toarray()
    X[650, 3] = -1
    a.X = sparse.csr_matrix(X)
    before = adata_fingerprint(a)
    with pytest.raises(ValueError, match="1 negative values"):
        embed(a, bert, know)
    with pytest.raises(ValueError, match="1 negative values"):
        sd.tl.cell_sentences(a, embed=False)
    assert adata_fingerprint(a) == before


# -- cells and genes ----------------------------------------------------------------------------
def test_cells_without_counts_and_genes_never_expressed(pbmc, bert, know):
    X = pbmc.X.toarray()
    X[:5] = 0  # five empty cells
    X[:, :20] = 0  # twenty genes never expressed
    pbmc.X = sparse.csr_matrix(X)
    a = pbmc
    before = adata_fingerprint(a)
    with scanpy_warnings() as warned:
        embed(a, bert, know)
        sd.tl.cell_sentences(a, model=bert)
    assert any("5 cells express no gene with text" in m for m in warned), warned
    assert any("5 cells express no gene" in m for m in warned)
    for key in ("X_gene_text", "X_cell_sentence"):
        Z = a.obsm[key]
        assert np.all(Z[:5] == 0) and np.all(np.isfinite(Z))
        np.testing.assert_allclose(np.linalg.norm(Z[5:], axis=1), 1, atol=1e-5)
    assert a.obs["cell_sentence"].iloc[:5].tolist() == [""] * 5
    p = a.uns["gene_text"]["params"]
    assert p["coverage_expressed"] == 1.0  # measured on expressed genes only
    assert_only_added(before, a, **merge(EMBED_GENES_OUT, CELL_SENTENCES_OUT))

    b = pbmc.copy()
    before = adata_fingerprint(b)
    sd.tl.cluster(b, n_clusters=3, use_semantic=False, **FAST)
    assert b.obs["scllm_dsc"].notna().all()
    assert np.all(np.isfinite(b.obsm["X_scllm_dsc"]))
    np.testing.assert_allclose(b.obsm["scllm_dsc_proba"].sum(1), 1, atol=1e-5)
    assert_only_added(before, b, **CLUSTER_OUT)


def test_duplicated_var_names(pbmc, bert, know):
    """Handled: genes are matched by position, duplicates get the same text."""
    names = list(pbmc.var_names)
    names[1] = names[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata: "not unique"
        pbmc.var_names = names
    before = adata_fingerprint(pbmc)
    embed(pbmc, bert, know)
    G = pbmc.varm["gene_text"]
    assert pbmc.var["gene_text_found"].iloc[:2].tolist() == [True, True]
    np.testing.assert_array_equal(G[0], G[1])
    sd.tl.cell_sentences(pbmc, embed=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sd.tl.cluster(pbmc, n_clusters=3, use_semantic=False, **FAST)
    assert pbmc.obs["scllm_dsc"].notna().all()
    assert_only_added(before, pbmc, **merge(EMBED_GENES_OUT, CELL_SENTENCES_OUT, CLUSTER_OUT))


def _real_ensembl_ids(genetext_dir, symbols):
    table = pd.read_csv(genetext_dir / "human_ensembl_to_symbol.tsv.gz", sep="\t", dtype=str)
    table = table.drop_duplicates("symbol", keep=False).set_index("symbol")["ensembl_id"]
    return [table.get(s) for s in symbols]


@pytest.mark.shared
def test_ensembl_ids_without_symbol_column(pbmc, bert, know, genetext_dir, human_table):
    ids = _real_ensembl_ids(genetext_dir, pbmc.var_names)
    keep = [i for i, e in enumerate(ids) if e is not None]
    a = pbmc[:, keep].copy()
    a.var_names = [f"{ids[i]}.{i % 17 + 1}" for i in keep]  # with version suffixes
    before = adata_fingerprint(a)
    # a table with an Ensembl sibling: matched by ID, version ignored
    embed(a, bert, human_table)
    p = a.uns["gene_text"]["params"]
    assert p["matched_by"]["ensembl"] >= 0.9 * a.n_vars, p["matched_by"]
    assert_only_added(before, a, **EMBED_GENES_OUT)
    # a source without Ensembl IDs: the error says to name a symbol column
    b = pbmc[:, keep].copy()
    b.var_names = a.var_names
    b.var["feature_name"] = pbmc.var_names[keep].to_numpy()
    before = adata_fingerprint(b)
    with pytest.raises(ValueError, match="Ensembl IDs") as err:
        embed(b, bert, know)
    assert "gene_symbols=" in str(err.value) and "'feature_name'" in str(err.value)
    assert adata_fingerprint(b) == before
    embed(b, bert, know, gene_symbols="feature_name")  # what the message says to do
    assert b.var["gene_text_found"].all()


def test_version_and_make_unique_suffixes(pbmc, bert, know):
    ref = pbmc.copy()
    embed(ref, bert, know)
    names = list(pbmc.var_names)
    names[:3] = [f"{n}.1" for n in names[:3]]  # R make.unique / version style
    pbmc.var_names = names
    before = adata_fingerprint(pbmc)
    embed(pbmc, bert, know)
    assert pbmc.var["gene_text_found"].iloc[:3].all()
    np.testing.assert_array_equal(pbmc.varm["gene_text"], ref.varm["gene_text"])
    sd.tl.cell_sentences(pbmc, embed=False)
    words = {w for s in pbmc.obs["cell_sentence"] for w in s.split()}
    assert not any(n in words for n in names[:3])  # suffixes are not written
    assert_only_added(before, pbmc, **merge(EMBED_GENES_OUT, CELL_SENTENCES_OUT))


@pytest.mark.shared
def test_species_without_knowledge_table(pbmc, bert, genetext_dir):
    before = adata_fingerprint(pbmc)
    with pytest.raises(FileNotFoundError, match="zebrafish") as err:
        sd.tl.embed_genes(pbmc, genetext_dir, model=bert, species="zebrafish")
    msg = str(err.value)
    assert "human_gene_text.tsv.gz" in msg  # what the folder holds
    assert "knowledge=" in msg and "dict" in msg and "'ncbi'" in msg  # what to do
    with pytest.raises(ValueError, match="Unknown species.*taxonomy ID"):
        sd.tl.embed_genes(pbmc, "ncbi", model=bert, species="martian")
    # names that say nothing about the species
    b = pbmc.copy()
    b.var_names = [f"{i}" for i in range(b.n_vars)]
    before_b = adata_fingerprint(b)
    with pytest.raises(ValueError, match="species='human'"):
        sd.tl.embed_genes(b, {"1": "one"}, model=bert)
    assert adata_fingerprint(pbmc) == before and adata_fingerprint(b) == before_b


def test_low_text_coverage_warns(pbmc, bert, know):
    few = {g: know[g] for g in pbmc.var_names[:3]}
    before = adata_fingerprint(pbmc)
    with scanpy_warnings() as warned:
        embed(pbmc, bert, few)
    assert any("of the expressed genes have a text" in m and "species" in m for m in warned)
    assert pbmc.uns["gene_text"]["params"]["coverage"] == pytest.approx(3 / 300)
    assert_only_added(before, pbmc, **EMBED_GENES_OUT)


# -- tiny data and cluster numbers --------------------------------------------------------------
def test_ten_cells(full):
    a = full[:10].copy()
    semantic_standin(a)
    before = adata_fingerprint(a)
    sd.tl.cluster(a, n_clusters=3, **FAST)  # fewer cells than the 15 neighbours
    p = a.uns["scllm_dsc"]["params"]
    assert p["n_neighbors"] == 9 and p["n_clusters"] == 3
    assert a.obs["scllm_dsc"].notna().all() and a.obsm["scllm_dsc_proba"].shape == (10, 3)
    assert_only_added(before, a, **CLUSTER_OUT)
    b = full[:10].copy()
    sd.tl.cluster(b, n_clusters=None, use_semantic=False, **FAST)
    assert b.uns["scllm_dsc"]["params"]["n_clusters"] >= 2


@pytest.mark.parametrize("k", [0, 1, -3, 2.5, "3", True, 10, 11])
def test_bad_n_clusters(full, k):
    a = full[:10].copy()
    before = adata_fingerprint(a)
    with pytest.raises(ValueError, match="n_clusters") as err:
        sd.tl.cluster(a, n_clusters=k, use_semantic=False, **FAST)
    assert "n_clusters=None" in str(err.value) or ">= 2" in str(err.value)
    assert adata_fingerprint(a) == before


def test_model_n_clusters_not_below_cells(full):
    a = full[:10].copy()
    sd.model.SCLLMDSC.setup_anndata(a, semantic_keys=None)
    with pytest.raises(ValueError, match="smaller than the number of cells"):
        sd.model.SCLLMDSC(a, n_clusters=10)


def test_too_few_cells_or_genes(full):
    for a, match in ((full[:2].copy(), "at least 3 cells"), (full[:50, :1].copy(), "2 genes")):
        before = adata_fingerprint(a)
        with pytest.raises(ValueError, match=match):
            sd.tl.cluster(a, use_semantic=False, **FAST)
        assert adata_fingerprint(a) == before


def test_no_cells(full, bert, know):
    """An empty selection gives empty results from the semantic tools, not a crash."""
    a = full[:0].copy()
    before = adata_fingerprint(a)
    embed(a, bert, know)
    sd.tl.cell_sentences(a, model=bert)
    assert a.obsm["X_gene_text"].shape == (0, 32) and a.obsm["X_cell_sentence"].shape == (0, 32)
    assert_only_added(before, a, **merge(EMBED_GENES_OUT, CELL_SENTENCES_OUT))


def test_single_cell_type():
    full = synthetic(400, 300)
    top = full.obs["cell_type"].value_counts().index[0]
    a = full[full.obs["cell_type"] == top][:, :300].copy()
    assert a.n_obs >= 50
    before = adata_fingerprint(a)
    # asked for two clusters: it splits the type in two
    b = a.copy()
    sd.tl.cluster(b, n_clusters=2, use_semantic=False, **FAST)
    assert set(b.obs["scllm_dsc"]) == {"0", "1"}
    # without k the default merges an over-clustering, never below two clusters
    c = a.copy()
    sd.tl.cluster(c, n_clusters=None, use_semantic=False, **FAST)
    assert c.uns["scllm_dsc"]["params"]["n_clusters"] >= 2
    # Leiden at a resolution where it sees a single cluster: clear error, nothing written
    with pytest.raises(RuntimeError, match="single cluster") as err:
        sd.tl.cluster(a, n_clusters=None, resolution=1e-6, use_semantic=False,
                      **{**FAST, "model_kwargs": {**FAST["model_kwargs"], "init": "leiden"}})
    assert "resolution" in str(err.value) and "n_clusters" in str(err.value)
    assert adata_fingerprint(a) == before


# -- containers and matrix types ----------------------------------------------------------------
@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_backed_anndata(full, tmp_path, reference_labels, dense):
    a = full[:200].copy()
    if dense:
        a.X = a.X.toarray()
    path = tmp_path / "backed.h5ad"
    a.write_h5ad(path)
    on_disk = path.read_bytes()
    b = ad.read_h5ad(path, backed="r")
    before = adata_fingerprint(b)
    sd.tl.cluster(b, n_clusters=3, use_semantic=False, **FAST)
    labels, latent = reference_labels
    np.testing.assert_array_equal(b.obs["scllm_dsc"].to_numpy(), labels)
    np.testing.assert_allclose(b.obsm["X_scllm_dsc"], latent, atol=1e-5)
    assert_only_added(before, b, **CLUSTER_OUT)
    b.file.close()
    assert path.read_bytes() == on_disk  # the file is never written


@pytest.mark.parametrize(
    "convert",
    [
        lambda X: X.toarray(),
        lambda X: X.toarray().astype(np.float64),
        lambda X: X.toarray().astype(np.int32),
        lambda X: sparse.csr_matrix(X, dtype=np.int64),
        lambda X: sparse.csc_matrix(X),
    ],
    ids=["dense-f32", "dense-f64", "dense-int32", "csr-int64", "csc"],
)
def test_matrix_types_give_the_same_clusters(pbmc, reference_labels, convert):
    pbmc.X = convert(pbmc.X)
    dtype, kind = pbmc.X.dtype, type(pbmc.X)
    before = adata_fingerprint(pbmc)
    sd.tl.cluster(pbmc, n_clusters=3, use_semantic=False, **FAST)
    np.testing.assert_array_equal(pbmc.obs["scllm_dsc"].to_numpy(), reference_labels[0])
    assert pbmc.X.dtype == dtype and type(pbmc.X) is kind
    assert_only_added(before, pbmc, **CLUSTER_OUT)


def test_view_is_written_not_its_parent(full, reference_labels):
    parent = full[:300].copy()
    view = parent[:200]
    assert view.is_view
    before_parent = adata_fingerprint(parent)
    before_view = adata_fingerprint(view)
    sd.tl.cluster(view, n_clusters=3, use_semantic=False, **FAST)
    np.testing.assert_array_equal(view.obs["scllm_dsc"].to_numpy(), reference_labels[0])
    assert_only_added(before_view, view, **CLUSTER_OUT)
    assert adata_fingerprint(parent) == before_parent
    # the model's setup on a view: the parent stays as it was too
    v2 = parent[:100]
    sd.model.SCLLMDSC.setup_anndata(v2, semantic_keys=None)
    assert adata_fingerprint(parent) == before_parent


def test_mudata(pbmc, reference_labels):
    mudata = pytest.importorskip("mudata")
    prot = ad.AnnData(np.ones((pbmc.n_obs, 3), dtype=np.float32), obs=pbmc.obs[[]])
    prot.var_names = ["p1", "p2", "p3"]
    md = mudata.MuData({"rna": pbmc, "prot": prot})
    before_rna, before_prot = adata_fingerprint(md.mod["rna"]), adata_fingerprint(md.mod["prot"])
    with pytest.raises(KeyError, match=r"no modality 'adt'.*\['rna', 'prot'\].*mod="):
        sd.tl.cluster(md, mod="adt", use_semantic=False, **FAST)
    with pytest.raises(ValueError, match="only used with a MuData"):
        sd.tl.cluster(md.mod["rna"], mod="rna", use_semantic=False, **FAST)
    assert adata_fingerprint(md.mod["rna"]) == before_rna
    sd.tl.cluster(md, mod="rna", n_clusters=3, use_semantic=False, **FAST)
    np.testing.assert_array_equal(md.mod["rna"].obs["scllm_dsc"].to_numpy(), reference_labels[0])
    assert_only_added(before_rna, md.mod["rna"], **CLUSTER_OUT)
    assert adata_fingerprint(md.mod["prot"]) == before_prot


# -- knowledge tables, caches, models -----------------------------------------------------------
def test_knowledge_table_with_missing_columns(pbmc, bert, tmp_path):
    path = tmp_path / "texts.tsv"
    path.write_text("gene\tdescription\nCD3E\tT cell receptor\n")
    before = adata_fingerprint(pbmc)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['symbol', 'text'\]") as err:
        sd.tl.embed_genes(pbmc, path, model=bert, species="human")
    assert "'gene', 'description'" in str(err.value)  # what it has
    assert adata_fingerprint(pbmc) == before


@pytest.mark.shared
def test_truncated_knowledge_table(pbmc, bert, tmp_path, human_table):
    raw = human_table.read_bytes()
    bad = tmp_path / "human_gene_text.tsv.gz"
    bad.write_bytes(raw[: len(raw) // 3])  # an interrupted download
    with gzip.open(bad, "rt") as fh:  # the header is readable, the end is not
        assert fh.readline().startswith("symbol")
    before = adata_fingerprint(pbmc)
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        sd.tl.embed_genes(pbmc, bad, model=bert)
    assert "download or write it again" in str(err.value)
    assert adata_fingerprint(pbmc) == before


def test_truncated_embedding_cache_is_rebuilt(pbmc, bert, know, tmp_path):
    from scllm_dsc import settings
    from scllm_dsc.encoders import clear_encoders

    ref = pbmc.copy()
    embed(ref, bert, know)
    old = settings._cache_dir
    settings.cache_dir = tmp_path
    try:
        clear_encoders()
        a = pbmc.copy()
        embed(a, bert, know)  # fills the fresh cache
        db = next((tmp_path / "embeddings").glob("*.sqlite"))
        clear_encoders()  # closes the database
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
        for extra in db.parent.glob("*.sqlite-*"):
            extra.unlink()
        b = pbmc.copy()
        before = adata_fingerprint(b)
        with scanpy_warnings() as warned:
            embed(b, bert, know)
        assert any("unreadable" in m and "fresh cache" in m for m in warned), warned
        np.testing.assert_allclose(b.varm["gene_text"], ref.varm["gene_text"], atol=1e-6)
        assert list(db.parent.glob("*.corrupt-*"))
        assert_only_added(before, b, **EMBED_GENES_OUT)
    finally:
        clear_encoders()
        settings._cache_dir = old


@pytest.mark.parametrize("tool", ["embed_genes", "cell_sentences"])
def test_unknown_model_offline(pbmc, know, monkeypatch, tool):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = adata_fingerprint(pbmc)
    model = "no-such-org/no-such-model-xyz"
    with pytest.raises(OSError, match="no-such-model-xyz") as err:
        if tool == "embed_genes":
            sd.tl.embed_genes(pbmc, know, model=model, species="human")
        else:
            sd.tl.cell_sentences(pbmc, model=model)
    msg = str(err.value)
    assert "offline" in msg and "folder" in msg and "model=" in msg
    assert adata_fingerprint(pbmc) == before
