"""sd.tl.embed_genes: gene vectors, coverage, Path 1 cell embedding, input types."""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_models import tiny_bert  # noqa: E402
from conftest import read_dataset  # noqa: E402

import scllm_dsc as sd  # noqa: E402
from scllm_dsc._constants import Key  # noqa: E402
from scllm_dsc.tl._embed_genes import process_gene_vectors  # noqa: E402

GENES = ["CD3E", "CD8A", "INS", "GCG", "RPL13", "NOTEXT1", "MS4A1", "PNRC2.1"]
KNOWLEDGE = {
    "CD3E": "cd3e the t cell receptor",
    "CD8A": "cd8a t cell receptor binds",
    "INS": "ins insulin hormone",
    "GCG": "gcg a hormone",
    "RPL13": "rpl13 ribosomal protein",
    "MS4A1": "b cell immune protein",
    "PNRC2": "a protein of the cell",
}


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return str(tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert"))


def toy(n=30, seed=0, sparse_x=True):
    rng = np.random.default_rng(seed)
    X = rng.poisson(1.0, size=(n, len(GENES))).astype(np.float32)
    X[:, 4] += 20  # ubiquitous ribosomal gene
    X[0] = 0  # an empty cell
    a = ad.AnnData(sparse.csr_matrix(X) if sparse_x else X)
    a.var_names = GENES
    a.obs_names = [f"c{i}" for i in range(n)]
    return a


def run(a, bert_dir, **kw):
    kw.setdefault("species", "human")
    return sd.tl.embed_genes(a, KNOWLEDGE, model=bert_dir, **kw)


def test_keys_shapes_dtypes(bert_dir):
    a = toy()
    X0 = a.X.copy()
    run(a, bert_dir)
    G = a.varm[Key.GENE_TEXT]
    found = a.var[Key.GENE_TEXT_FOUND].to_numpy()
    assert G.shape == (8, 32) and G.dtype == np.float32
    assert found.dtype == bool and found.tolist() == [True] * 5 + [False] + [True, True]
    np.testing.assert_allclose(np.linalg.norm(G[found], axis=1), 1, atol=1e-5)
    assert np.all(G[~found] == 0)
    Z = a.obsm[Key.X_GENE_TEXT]
    assert Z.shape == (30, 32) and Z.dtype == np.float32
    assert np.all(Z[0] == 0)
    np.testing.assert_allclose(np.linalg.norm(Z[1:], axis=1), 1, atol=1e-5)
    p = a.uns[Key.GENE_TEXT]["params"]
    assert p["species"] == "human" and p["n_found"] == 7 and p["coverage"] == pytest.approx(7 / 8)
    assert p["matched_by"]["unmatched"] == 1 and p["matched_by"]["symbol"] == 7
    assert not p["center"] and p["n_remove_pcs"] == 0 and not p["idf"]
    assert p["n_top_genes"] == 2048
    assert 0 < p["coverage_expressed"] <= 1
    assert (a.X != X0).nnz == 0


def test_path1_plain_equals_manual(bert_dir):
    a = toy()
    run(a, bert_dir, n_top_genes=3)  # defaults: plain weights, no processing
    G = a.varm[Key.GENE_TEXT]
    found = a.var[Key.GENE_TEXT_FOUND].to_numpy()
    X = a.X.toarray().astype(np.float64)
    expected = np.zeros((a.n_obs, G.shape[1]))
    for i, x in enumerate(X):
        if x.sum() == 0:
            continue
        norm = np.log1p(x / x.sum() * 1e4)
        norm[~found] = 0
        order = np.lexsort((np.arange(len(norm)), -norm))[:3]
        order = order[norm[order] > 0]
        w = norm[order] / norm[order].sum()
        expected[i] = w @ G[order]
    n = np.linalg.norm(expected, axis=1, keepdims=True)
    expected = np.divide(expected, n, out=np.zeros_like(expected), where=n > 0)
    np.testing.assert_allclose(a.obsm[Key.X_GENE_TEXT], expected, atol=1e-5)


def test_processing_removes_common_direction():
    rng = np.random.default_rng(0)
    common = rng.standard_normal(16)
    G = rng.standard_normal((50, 16)) * 0.3 + common
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    Gp, info = process_gene_vectors(G, center=True, n_remove_pcs=1)
    assert abs((G @ G.T)[np.triu_indices(50, 1)].mean()) > 0.5
    assert abs((Gp @ Gp.T)[np.triu_indices(50, 1)].mean()) < 0.1
    np.testing.assert_allclose(np.linalg.norm(Gp, axis=1), 1, atol=1e-6)
    assert info["removed_energy"] > 0


def test_dense_sparse_backed_view_agree(bert_dir, tmp_path):
    ref = toy()
    run(ref, bert_dir, center=True, n_remove_pcs=1, idf=True)
    Z = ref.obsm[Key.X_GENE_TEXT]
    p = ref.uns[Key.GENE_TEXT]["params"]
    assert p["center"] and p["n_remove_pcs"] == 1 and p["idf"] and "removed_energy" in p
    d = toy(sparse_x=False)
    run(d, bert_dir, center=True, n_remove_pcs=1, idf=True)
    np.testing.assert_allclose(d.obsm[Key.X_GENE_TEXT], Z, atol=1e-6)
    toy().write_h5ad(tmp_path / "t.h5ad")
    b = ad.read_h5ad(tmp_path / "t.h5ad", backed="r")
    run(b, bert_dir, center=True, n_remove_pcs=1, idf=True)
    np.testing.assert_allclose(b.obsm[Key.X_GENE_TEXT], Z, atol=1e-6)
    # a view of the first 10 cells: same gene vectors; IDF comes from the view's own cells
    v = toy()[:10]
    run(v, bert_dir, idf=False)
    np.testing.assert_array_equal(v.varm[Key.GENE_TEXT], ref.varm[Key.GENE_TEXT])
    # determinism
    again = toy()
    run(again, bert_dir, center=True, n_remove_pcs=1, idf=True)
    np.testing.assert_array_equal(again.obsm[Key.X_GENE_TEXT], Z)


def test_layer_copy_gene_symbols_mudata(bert_dir):
    a = toy()
    a.layers["counts"] = a.X.copy()
    a.X = sparse.csr_matrix(np.log1p(a.X.toarray()))
    out = run(a, bert_dir, layer="counts", copy=True)
    assert Key.GENE_TEXT not in a.varm and Key.X_GENE_TEXT not in a.obsm
    ref = toy()
    run(ref, bert_dir)
    np.testing.assert_allclose(out.obsm[Key.X_GENE_TEXT], ref.obsm[Key.X_GENE_TEXT], atol=1e-6)
    b = toy()
    b.var["symbol"] = b.var_names
    b.var_names = [f"ENSG{i:011d}" for i in range(b.n_vars)]
    run(b, bert_dir, gene_symbols="symbol")
    np.testing.assert_allclose(b.obsm[Key.X_GENE_TEXT], ref.obsm[Key.X_GENE_TEXT], atol=1e-6)
    mudata = pytest.importorskip("mudata")
    md = mudata.MuData({"rna": toy()})
    run(md, bert_dir, mod="rna")
    assert md.mod["rna"].obsm[Key.X_GENE_TEXT].shape == (30, 32)


def test_idf_downweights_ubiquitous_gene(bert_dir):
    a = toy()
    run(a, bert_dir, idf=False, center=False, n_remove_pcs=0)
    b = toy()
    run(b, bert_dir, idf=True, center=False, n_remove_pcs=0)
    g = a.varm[Key.GENE_TEXT][4]  # RPL13, in every cell
    assert (b.obsm[Key.X_GENE_TEXT][1:] @ g).mean() < (a.obsm[Key.X_GENE_TEXT][1:] @ g).mean()


def test_errors_leave_adata_unchanged(bert_dir):
    a = toy()
    with pytest.raises(ValueError, match="No gene"):
        sd.tl.embed_genes(a, {"FOO": "foo"}, model=bert_dir, species="human")
    with pytest.raises(ValueError, match="n_top_genes"):
        run(a, bert_dir, n_top_genes=0)
    neg = toy(sparse_x=False)
    neg.X = neg.X - 5
    with pytest.raises(ValueError, match="negative"):
        run(neg, bert_dir)
    assert Key.GENE_TEXT not in a.varm and Key.GENE_TEXT not in a.uns
    assert Key.GENE_TEXT_FOUND not in a.var


@pytest.mark.slow
@pytest.mark.shared
def test_real_zheng_subset_minilm(shared_datasets, human_table):
    """300 cells x the 1,000 most expressed genes of Zheng with the real MiniLM."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    full = read_dataset("Zheng_sortedPBMC_2140")
    cells = np.sort(np.random.default_rng(0).choice(full.n_obs, 300, replace=False))
    sub = full[cells]
    top = np.sort(np.argsort(-np.asarray(sub.X.sum(0)).ravel(), kind="stable")[:1000])
    a = sub[:, top].copy()
    sd.tl.embed_genes(a, human_table)
    p = a.uns[Key.GENE_TEXT]["params"]
    assert p["coverage_expressed"] >= 0.9 and p["knowledge"]
    assert a.varm[Key.GENE_TEXT].shape == (1000, 384)
    Z = a.obsm[Key.X_GENE_TEXT]
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-5)
    y = a.obs["cell_type"].astype(str)
    acc = cross_val_score(KNeighborsClassifier(15, metric="cosine"), Z, y, cv=3).mean()
    majority = y.value_counts(normalize=True).iloc[0]
    assert acc > majority + 0.2, (acc, majority)


def test_default_knowledge_offline(bert_dir, monkeypatch):
    """No knowledge=, no SCLLM_DSC_DATA, no ../shared: the shipped tables are used and the
    species is inferred (human symbols here; mouse-style symbols pick the mouse table)."""
    from scllm_dsc._settings import bundled_knowledge_dir

    monkeypatch.delenv("SCLLM_DSC_DATA", raising=False)
    monkeypatch.setattr(sd.settings, "_knowledge_dir", None)
    a = toy()
    sd.tl.embed_genes(a, model=bert_dir)
    p = a.uns[Key.GENE_TEXT]["params"]
    assert p["species"] == "human"
    assert p["knowledge"] == str(bundled_knowledge_dir() / "human_gene_text.tsv.gz")
    found = a.var[Key.GENE_TEXT_FOUND]
    assert found["CD3E"] and found["INS"] and found["PNRC2.1"] and not found["NOTEXT1"]
    assert a.obsm[Key.X_GENE_TEXT].shape == (a.n_obs, 32)
    m = toy()
    m.var_names = [g.capitalize() if g != "NOTEXT1" else g for g in GENES]
    sd.tl.embed_genes(m, model=bert_dir)
    pm = m.uns[Key.GENE_TEXT]["params"]
    assert pm["species"] == "mouse" and pm["knowledge"].endswith("mouse_gene_text.tsv.gz")
    assert m.var[Key.GENE_TEXT_FOUND]["Cd3e"]


@pytest.mark.slow
def test_default_model_first_call_uses_shipped_vectors(monkeypatch, tmp_path):
    """With the default model, genes with a summary come from the shipped vectors."""
    from scllm_dsc.encoders import clear_encoders, get_encoder, shipped_vectors

    table = shipped_vectors()
    if table is None:
        pytest.skip("no shipped vectors in this checkout")
    monkeypatch.delenv("SCLLM_DSC_DATA", raising=False)
    monkeypatch.setattr(sd.settings, "_knowledge_dir", None)
    monkeypatch.setattr(sd.settings, "_cache_dir", tmp_path)  # empty cache
    clear_encoders()
    a = toy()
    a.var_names = ["CD3E", "CD8A", "INS", "GCG", "RPL13", "NOTEXT1", "MS4A1", "LINC00115"]
    sd.tl.embed_genes(a, species="human")
    enc = get_encoder()
    # LINC00115 has a name-only text: embedded on the fly; the rest are shipped
    assert enc.stats["shipped"] == 6 and enc.stats["embedded"] == 1
    G = a.varm[Key.GENE_TEXT]
    np.testing.assert_allclose(np.linalg.norm(G[a.var[Key.GENE_TEXT_FOUND].to_numpy()], axis=1),
                               1, atol=1e-3)
    clear_encoders()
