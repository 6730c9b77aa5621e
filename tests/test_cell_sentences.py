"""sd.tl.cell_sentences: sentence text, determinism, input types, embedding (Path 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_models import tiny_bert  # noqa: E402
from conftest import read_dataset  # noqa: E402

import scllm_dsc as sd  # noqa: E402
from scllm_dsc._constants import Key  # noqa: E402


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert", max_position_embeddings=16)


def toy(sparse_x=True):
    X = np.array(
        [
            [5, 0, 3, 3, 1, 0],
            [0, 0, 0, 0, 0, 0],
            [1, 2, 0, 9, 0, 2],
            [0, 7, 0, 0, 0, 1],
        ],
        dtype=np.float32,
    )
    var = pd.DataFrame(
        {"symbol": ["CD3E", "INS", "PNRC2", "GCG", "RP11-345P4.9", "AL645728.1"]},
        index=["g0", "g1", "g2", "g3", "g4", "g5"],
    )
    a = ad.AnnData(sparse.csr_matrix(X) if sparse_x else X, var=var)
    a.var_names = ["CD3E", "INS", "PNRC2.1", "GCG", "RP11-345P4.9", "AL645728.1"]
    a.obs_names = [f"c{i}" for i in range(4)]
    return a


def test_sentences_text_order_ties_suffixes():
    a = toy()
    X0 = a.X.copy()
    sd.tl.cell_sentences(a, n_genes=3, embed=False)
    s = a.obs[Key.CELL_SENTENCE].tolist()
    # ties (3, 3) broken by gene order; .1 suffix stripped; zeros never listed
    assert s[0] == "CD3E PNRC2 GCG"
    assert s[1] == ""
    assert s[2] == "GCG INS AL645728.1"
    assert s[3] == "INS AL645728.1"
    assert Key.X_CELL_SENTENCE not in a.obsm
    p = a.uns[Key.CELL_SENTENCE]["params"]
    assert p["n_genes"] == 3 and p["rank_by"] == "expression" and not p["embedded"]
    assert (a.X != X0).nnz == 0  # X untouched


def test_dense_sparse_backed_agree(tmp_path):
    res = []
    for sp in (True, False):
        a = toy(sp)
        sd.tl.cell_sentences(a, n_genes=4, embed=False)
        res.append(a.obs[Key.CELL_SENTENCE].tolist())
    a = toy()
    a.write_h5ad(tmp_path / "t.h5ad")
    b = ad.read_h5ad(tmp_path / "t.h5ad", backed="r")
    sd.tl.cell_sentences(b, n_genes=4, embed=False)
    res.append(b.obs[Key.CELL_SENTENCE].tolist())
    assert res[0] == res[1] == res[2]


def test_gene_symbols_column_view_copy_mudata():
    a = toy()
    out = sd.tl.cell_sentences(a, n_genes=2, embed=False, gene_symbols="symbol", copy=True)
    assert Key.CELL_SENTENCE not in a.obs  # copy=True leaves the input alone
    assert out.obs[Key.CELL_SENTENCE].iloc[0] == "CD3E PNRC2"
    v = a[[0, 2]]
    sd.tl.cell_sentences(v, n_genes=1, embed=False)
    assert v.obs[Key.CELL_SENTENCE].tolist() == ["CD3E", "GCG"]
    mudata = pytest.importorskip("mudata")
    md = mudata.MuData({"rna": toy()})
    sd.tl.cell_sentences(md, n_genes=1, embed=False, mod="rna")
    assert md.mod["rna"].obs[Key.CELL_SENTENCE].iloc[2] == "GCG"


def test_specificity_ranking():
    a = toy()
    sd.tl.cell_sentences(a, n_genes=2, embed=False, rank_by="specificity")
    assert a.uns[Key.CELL_SENTENCE]["params"]["rank_by"] == "specificity"
    # a gene expressed at the same level everywhere ranks last
    X = np.array([[10, 1, 0], [10, 0, 1], [10, 1, 1]], dtype=np.float32)
    b = ad.AnnData(X)
    b.var_names = ["RPL13", "CD3E", "MS4A1"]
    sd.tl.cell_sentences(b, n_genes=3, embed=False, rank_by="specificity")
    assert all(s.split()[-1] == "RPL13" for s in b.obs[Key.CELL_SENTENCE])
    sd.tl.cell_sentences(b, n_genes=3, embed=False)
    assert all(s.split()[0] == "RPL13" for s in b.obs[Key.CELL_SENTENCE])


def test_bad_arguments_leave_adata_unchanged():
    a = toy()
    with pytest.raises(ValueError, match="rank_by"):
        sd.tl.cell_sentences(a, rank_by="random")
    with pytest.raises(ValueError, match="n_genes"):
        sd.tl.cell_sentences(a, n_genes=0)
    with pytest.raises(KeyError, match="layer"):
        sd.tl.cell_sentences(a, layer="counts")
    with pytest.raises(KeyError, match="gene_symbols"):
        sd.tl.cell_sentences(a, gene_symbols="nope")
    b = toy(False)
    b.X = b.X - 1
    with pytest.raises(ValueError, match="negative"):
        sd.tl.cell_sentences(b, embed=False)
    assert Key.CELL_SENTENCE not in a.obs and Key.CELL_SENTENCE not in a.uns


def test_embedding_with_tiny_model_chunks_long_sentences(bert_dir):
    a = toy()
    sd.tl.cell_sentences(a, n_genes=6, model=str(bert_dir), key_added="cs")
    E = a.obsm["X_cs"]
    assert E.shape == (4, 32) and E.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(E[[0, 2, 3]], axis=1), 1, atol=1e-5)
    assert np.all(E[1] == 0)  # a cell without expressed genes
    from scllm_dsc.encoders import get_encoder

    enc = get_encoder(str(bert_dir))
    np.testing.assert_allclose(E[0], enc.encode_long([a.obs["cs"].iloc[0]], False)[0], atol=1e-6)
    p = a.uns["cs"]["params"]
    assert p["model"] == enc.name and p["max_length"] == 16 and p["dim"] == 32
    # determinism: a second run gives identical output
    b = toy()
    sd.tl.cell_sentences(b, n_genes=6, model=str(bert_dir), key_added="cs")
    np.testing.assert_array_equal(b.obsm["X_cs"], E)
    assert p["quantize"] is False
    # dynamic int8 on CPU: its own vectors, close to float32 ones, recorded in uns
    q = toy()
    sd.tl.cell_sentences(q, n_genes=6, model=str(bert_dir), key_added="cs", quantize=True)
    Q = q.obsm["X_cs"]
    assert q.uns["cs"]["params"]["quantize"] is True and not np.array_equal(Q, E)
    assert (Q[[0, 2, 3]] * E[[0, 2, 3]]).sum(1).min() > 0.9


@pytest.mark.slow
@pytest.mark.shared
def test_real_zheng_subset_minilm(shared_datasets):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    full = read_dataset("Zheng_sortedPBMC_2140")
    idx = np.random.default_rng(0).choice(full.n_obs, 300, replace=False)
    a = full[np.sort(idx)].copy()
    sd.tl.cell_sentences(a)
    s = a.obs[Key.CELL_SENTENCE]
    assert all(len(x.split()) == 100 for x in s)
    assert not any(t.endswith(".1") and "-" not in t for x in s for t in x.split())
    E = a.obsm[Key.X_CELL_SENTENCE]
    assert E.shape == (300, 384)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    assert a.uns[Key.CELL_SENTENCE]["params"]["max_length"] == 256
    y = a.obs["cell_type"].astype(str)
    acc = cross_val_score(KNeighborsClassifier(15, metric="cosine"), E, y, cv=3).mean()
    majority = y.value_counts(normalize=True).iloc[0]
    assert acc > majority + 0.1, (acc, majority)
