"""``sd.tl.refine_embedding`` and ``sd.tl.transfer_labels``: outputs, determinism, learning,
apply_to, input checks and input safety."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import scllm_dsc as sd

torch.set_num_threads(1)

FAST = dict(n_latent=8, n_hidden=32, n_epochs=5, batch_size=64)
KEY = "X_gene_text_refined"


def _synthetic(n_per_class: int = 100, n_dims: int = 64, n_signal: int = 3, seed: int = 0,
               shift: float = 1.0, nuisance: float = 1.0):
    """Gene-text-like embedding: a shared direction (cosines close to 1) plus small noise.
    The two classes differ only by a shift along ``n_signal`` noisy dimensions; the other
    dimensions carry ``nuisance`` times more noise and no class information."""
    rng = np.random.default_rng(seed)
    y = np.repeat(["a", "b"], n_per_class)
    noise = rng.normal(size=(2 * n_per_class, n_dims))
    noise[:, n_signal:] *= nuisance
    noise[:, :n_signal] += np.where(y == "a", -shift, shift)[:, None] / 2
    common = np.full(n_dims, 1.0) / np.sqrt(n_dims)
    X = common + 0.01 * noise
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    a = ad.AnnData(
        X=np.zeros((len(y), 3), dtype=np.float32),
        obs=pd.DataFrame({"cell_type": pd.Categorical(y)}, index=[f"c{i}" for i in range(len(y))]),
    )
    a.obsm["X_gene_text"] = X.astype(np.float32)
    return a


def _knn_accuracy(Z_train, y_train, Z_test, y_test, k: int = 15) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(k, metric="cosine").fit(Z_train, y_train)
    return float((clf.predict(Z_test) == y_test).mean())


def _snapshot(a: ad.AnnData):
    return set(a.obsm), set(a.uns), set(a.obs.columns), a.obsm["X_gene_text"].copy() \
        if "X_gene_text" in a.obsm else None


def _unchanged(a: ad.AnnData, snap) -> None:
    obsm, uns, obs, X = snap
    assert set(a.obsm) == obsm and set(a.uns) == uns and set(a.obs.columns) == obs
    if X is not None:
        np.testing.assert_array_equal(a.obsm["X_gene_text"], X)


@pytest.fixture(scope="module")
def refined():
    a = _synthetic(60)
    sd.tl.refine_embedding(a, random_state=0, **FAST)
    return a


# --------------------------------------------------------------------------- refine_embedding


def test_outputs(refined):
    a = refined
    Z = a.obsm[KEY]
    assert Z.shape == (a.n_obs, 8) and Z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-5)
    assert np.isfinite(Z).all()
    u = a.uns[KEY]
    p = u["params"]
    assert p["use_rep"] == "X_gene_text" and p["n_latent"] == 8 and p["n_input"] == 64
    assert not p["supervised"] and p["n_labelled"] == 0 and p["random_state"] == 0
    hist = u["loss_history"]
    assert isinstance(hist, list) and len(hist) == 5
    assert all(isinstance(v, float) and np.isfinite(v) for v in hist)


def test_h5ad_roundtrip(refined, tmp_path):
    refined.write_h5ad(tmp_path / "refined.h5ad")
    back = ad.read_h5ad(tmp_path / "refined.h5ad")
    np.testing.assert_array_equal(back.obsm[KEY], refined.obsm[KEY])
    assert back.uns[KEY]["params"]["n_latent"] == 8
    np.testing.assert_allclose(back.uns[KEY]["loss_history"], refined.uns[KEY]["loss_history"])


def test_defaults_and_key_added():
    a = _synthetic(20)
    sd.tl.refine_embedding(a, n_epochs=2, key_added="X_ref")
    assert a.obsm["X_ref"].shape == (40, 64)  # default n_latent
    assert "X_ref" in a.uns and KEY not in a.obsm


def test_deterministic(refined):
    a = _synthetic(60)
    sd.tl.refine_embedding(a, random_state=0, **FAST)
    np.testing.assert_array_equal(a.obsm[KEY], refined.obsm[KEY])
    assert a.uns[KEY]["loss_history"] == refined.uns[KEY]["loss_history"]
    b = _synthetic(60)
    sd.tl.refine_embedding(b, random_state=1, **FAST)
    assert not np.allclose(b.obsm[KEY], refined.obsm[KEY])


def test_mudata_rna_modality(refined):
    import mudata as md

    mdata = md.MuData({"rna": _synthetic(60)})
    sd.tl.refine_embedding(mdata, random_state=0, **FAST)
    np.testing.assert_array_equal(mdata.mod["rna"].obsm[KEY], refined.obsm[KEY])
    with pytest.raises(KeyError, match="no modality 'atac'"):
        sd.tl.refine_embedding(mdata, mod="atac", **FAST)


def test_global_torch_state_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sd.tl.refine_embedding(_synthetic(10), n_epochs=1, n_hidden=8, n_latent=4)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


def test_supervised_separates_groups_better_than_input():
    """Classes differ along 3 of 32 dims, the 29 others carry 3x more (uninformative) noise:
    kNN on the input is close to chance; SupCon on 100 labelled cells learns to weigh the 3
    dims, which generalises to the 200 held-out (unlabelled) cells."""
    a = _synthetic(150, n_dims=32, n_signal=3, shift=2.0, nuisance=3.0, seed=0)
    y = a.obs["cell_type"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    train = np.zeros(a.n_obs, bool)
    train[rng.choice(a.n_obs, 100, replace=False)] = True
    labels = pd.Series(y, dtype=object).where(train, None).to_numpy()  # held out: unlabelled
    X = a.obsm["X_gene_text"]
    acc_raw = _knn_accuracy(X[train], y[train], X[~train], y[~train])
    sd.tl.refine_embedding(a, labels, n_latent=16, n_hidden=64, n_epochs=30, batch_size=128,
                           random_state=0)
    Z = a.obsm[KEY]
    acc_ref = _knn_accuracy(Z[train], y[train], Z[~train], y[~train])
    p = a.uns[KEY]["params"]
    assert p["supervised"] and p["n_labelled"] == 100 and p["labels"] == "<array>"
    assert acc_raw < 0.7, acc_raw
    assert acc_ref > acc_raw + 0.1, (acc_raw, acc_ref)
    assert acc_ref > 0.75, (acc_raw, acc_ref)


def test_supervised_obs_column_with_missing_labels():
    a = _synthetic(30)
    lab = a.obs["cell_type"].astype(object)
    lab.iloc[::3] = np.nan
    a.obs["partial"] = pd.Categorical(lab)
    sd.tl.refine_embedding(a, "partial", **FAST)
    p = a.uns[KEY]["params"]
    assert p["labels"] == "partial" and p["n_labelled"] == 40 and p["n_classes"] == 2


def test_apply_to():
    a, q1, q2 = _synthetic(30, seed=0), _synthetic(10, seed=1), _synthetic(5, seed=2)
    sd.tl.refine_embedding(a, "cell_type", apply_to=[q1, q2], **FAST)
    for q in (q1, q2):
        Z = q.obsm[KEY]
        assert Z.shape == (q.n_obs, 8) and Z.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-5)
        assert KEY not in q.uns
    # the same network: a query identical to the reference gets identical rows
    q3 = a.copy()
    del q3.obsm[KEY]
    b = _synthetic(30, seed=0)
    sd.tl.refine_embedding(b, "cell_type", apply_to=q3, **FAST)
    np.testing.assert_allclose(q3.obsm[KEY], b.obsm[KEY], atol=1e-6)
    np.testing.assert_array_equal(b.obsm[KEY], a.obsm[KEY])


def test_copy_leaves_input_untouched():
    a = _synthetic(20)
    snap = _snapshot(a)
    out = sd.tl.refine_embedding(a, copy=True, **FAST)
    _unchanged(a, snap)
    assert out is not a and KEY in out.obsm and KEY in out.uns
    assert sd.tl.refine_embedding(a, **FAST) is None


def _errors():
    a = _synthetic(10)
    return [
        (dict(use_rep="X_missing"), KeyError, r"sd\.tl\.embed_genes\(adata\)"),
        (dict(labels="no_such_column"), KeyError, "not a column of `adata.obs`"),
        (dict(labels=["a", "b"]), ValueError, "one entry per cell"),
        (dict(labels=np.array(["a"] * a.n_obs)), ValueError, "at least 2 distinct labels"),
        (dict(labels=np.array(["a"] + [None] * (a.n_obs - 1), dtype=object)), ValueError,
         "at least 2 distinct labels"),
        (dict(n_latent=0), ValueError, "`n_latent` must be an integer >= 1"),
        (dict(batch_size=1), ValueError, "`batch_size` must be an integer >= 2"),
        (dict(temperature=0), ValueError, "`temperature` must be a positive"),
        (dict(dropout=1.0), ValueError, r"`dropout` must lie in \[0, 1\)"),
    ]


@pytest.mark.parametrize("i", range(len(_errors())))
def test_errors(i):
    kwargs, exc, match = _errors()[i]
    a = _synthetic(10)
    q = _synthetic(5, seed=1)
    snap, qsnap = _snapshot(a), _snapshot(q)
    with pytest.raises(exc, match=match):
        sd.tl.refine_embedding(a, apply_to=[q], **{**FAST, **kwargs})
    _unchanged(a, snap)
    _unchanged(q, qsnap)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_error_non_finite(bad):
    a = _synthetic(10)
    a.obsm["X_gene_text"][3, 5] = bad
    snap = _snapshot(a)
    with pytest.raises(ValueError, match="NaN or infinite"):
        sd.tl.refine_embedding(a, **FAST)
    _unchanged(a, snap)


def test_error_no_gene_text():
    a = _synthetic(10)
    del a.obsm["X_gene_text"]
    with pytest.raises(KeyError, match=r"obsm\['X_gene_text'\]` not found.*sd\.tl\.embed_genes"):
        sd.tl.refine_embedding(a, **FAST)
    assert not a.obsm and not a.uns


def test_error_too_few_cells():
    a = _synthetic(10)[:1].copy()
    with pytest.raises(ValueError, match="at least 2 cells"):
        sd.tl.refine_embedding(a, **FAST)
    assert KEY not in a.obsm


def test_error_apply_to_width_or_missing():
    a = _synthetic(10)
    q = ad.AnnData(np.zeros((4, 3), dtype=np.float32))
    q.obsm["X_gene_text"] = np.ones((4, 32), dtype=np.float32)
    snap = _snapshot(a)
    with pytest.raises(ValueError, match=r"apply_to\[0\].*32 columns.*64"):
        sd.tl.refine_embedding(a, apply_to=[q], **FAST)
    _unchanged(a, snap)
    assert KEY not in q.obsm
    del q.obsm["X_gene_text"]
    with pytest.raises(KeyError, match=r"apply_to\[0\]\.obsm\['X_gene_text'\]"):
        sd.tl.refine_embedding(a, apply_to=q, **FAST)
    _unchanged(a, snap)


# --------------------------------------------------------------------------- transfer_labels


def _toy_pair():
    """Reference: two tight groups on the unit circle (plus one unlabelled cell in between)."""
    h = np.pi / 2
    ang_ref = np.array([0.0, 0.1, -0.1, h, h + 0.1, h - 0.1, h / 2])
    ref = ad.AnnData(np.zeros((7, 2), dtype=np.float32))
    ref.obsm[KEY] = np.c_[np.cos(ang_ref), np.sin(ang_ref)].astype(np.float32)
    ref.obs["cell_type"] = pd.Categorical(["x", "x", "x", "y", "y", "y", None],
                                          categories=["x", "y", "z"])
    # two cells inside the groups, two between them (next to the unlabelled cell)
    ang_q = np.array([0.05, h - 0.05, h / 2 - 0.05, h / 2 + 0.05])
    query = ad.AnnData(np.zeros((4, 2), dtype=np.float32))
    query.obsm[KEY] = np.c_[np.cos(ang_q), np.sin(ang_q)].astype(np.float32)
    return ref, query


def test_transfer_labels_toy():
    ref, query = _toy_pair()
    sd.tl.transfer_labels(ref, query, "cell_type", n_neighbors=3)
    pred = query.obs["cell_type_transferred"]
    assert isinstance(pred.dtype, pd.CategoricalDtype)
    assert list(pred.cat.categories) == ["x", "y", "z"]
    assert list(pred.astype(str)) == ["x", "y", "x", "y"]
    conf = query.obs["cell_type_transferred_confidence"].to_numpy()
    assert ((conf >= 0) & (conf <= 1)).all()
    np.testing.assert_allclose(conf[:2], 1.0)  # 3 nearest are all of one group
    assert (conf[2:] < 1).all() and (conf[2:] > 0.5).all()


def test_transfer_labels_caps_neighbors_and_key_added():
    ref, query = _toy_pair()
    out = sd.tl.transfer_labels(ref, query, "cell_type", n_neighbors=50, key_added="pred",
                                copy=True)
    assert "pred" in out.obs and "pred_confidence" in out.obs
    assert "pred" not in query.obs  # copy=True leaves the query untouched
    # capped at the 6 labelled cells: everyone votes, the nearer group wins
    assert list(out.obs["pred"].astype(str)) == ["x", "y", "x", "y"]
    assert (out.obs["pred_confidence"].between(0, 1)).all()


def test_transfer_labels_matches_sklearn():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    ref = ad.AnnData(np.zeros((200, 1), dtype=np.float32))
    ref.obsm[KEY] = rng.normal(size=(200, 5)).astype(np.float32)
    ref.obs["lab"] = rng.choice(["p", "q", "r"], 200)
    query = ad.AnnData(np.zeros((300, 1), dtype=np.float32))
    query.obsm[KEY] = rng.normal(size=(300, 5)).astype(np.float32)
    sd.tl.transfer_labels(ref, query, "lab", n_neighbors=7)
    clf = KNeighborsClassifier(7, metric="cosine", weights="distance", algorithm="brute")
    clf.fit(ref.obsm[KEY], ref.obs["lab"])
    expected = clf.predict(query.obsm[KEY])
    assert list(query.obs["lab_transferred"].cat.categories) == ["p", "q", "r"]
    assert (query.obs["lab_transferred"].astype(str).to_numpy() == expected).mean() > 0.99
    proba = clf.predict_proba(query.obsm[KEY]).max(1)
    np.testing.assert_allclose(query.obs["lab_transferred_confidence"], proba, atol=1e-4)


def test_transfer_labels_errors():
    ref, query = _toy_pair()
    qsnap = (set(query.obs.columns), query.obsm[KEY].copy())
    with pytest.raises(KeyError, match="no column 'nope'"):
        sd.tl.transfer_labels(ref, query, "nope")
    with pytest.raises(KeyError, match=r"query\.obsm\['X_other'\]"):
        ref.obsm["X_other"] = ref.obsm[KEY]
        sd.tl.transfer_labels(ref, query, "cell_type", use_rep="X_other")
    with pytest.raises(KeyError, match=r"reference\.obsm\['X_none'\]"):
        sd.tl.transfer_labels(ref, query, "cell_type", use_rep="X_none")
    with pytest.raises(ValueError, match="`n_neighbors` must be an integer >= 1"):
        sd.tl.transfer_labels(ref, query, "cell_type", n_neighbors=0)
    wide = query.copy()
    wide.obsm[KEY] = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="has 2 columns but .* has 3"):
        sd.tl.transfer_labels(ref, wide, "cell_type")
    ref.obs["empty"] = pd.Categorical([None] * ref.n_obs, categories=["x"])
    with pytest.raises(ValueError, match="no labelled cells"):
        sd.tl.transfer_labels(ref, query, "empty")
    assert set(query.obs.columns) == qsnap[0]
    np.testing.assert_array_equal(query.obsm[KEY], qsnap[1])


@pytest.mark.shared
def test_refine_then_transfer_on_real_data(shared_datasets):
    """End to end on a real dataset (PBMC68k_reduced_700, 700 cells). The real gene-text
    embedding needs the text encoder, so a stand-in is built from the expression: a shared
    direction plus a small random projection of the log expression."""
    a = ad.read_h5ad(shared_datasets / "PBMC68k_reduced_700.h5ad")
    X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    X = np.log1p(np.clip(X, 0, None) / np.maximum(X.sum(1, keepdims=True), 1e-12) * 1e4)
    rng = np.random.default_rng(0)
    P = rng.normal(size=(X.shape[1], 64)) / np.sqrt(X.shape[1])
    E = 1.0 + 0.05 * (X - X.mean(0)) @ P / 8
    a.obsm["X_gene_text"] = (E / np.linalg.norm(E, axis=1, keepdims=True)).astype(np.float32)
    y = a.obs["cell_type"].astype(str).to_numpy()
    ref_idx = np.concatenate([
        rng.choice(np.flatnonzero(y == c), min(20, (y == c).sum() - 1), replace=False)
        for c in np.unique(y) if (y == c).sum() > 1
    ])
    is_ref = np.zeros(a.n_obs, bool)
    is_ref[ref_idx] = True
    ref, query = a[is_ref].copy(), a[~is_ref].copy()
    sd.tl.refine_embedding(ref, "cell_type", apply_to=[query], n_epochs=20, random_state=0)
    sd.tl.transfer_labels(ref, query, "cell_type")
    pred = query.obs["cell_type_transferred"].astype(str).to_numpy()
    truth = query.obs["cell_type"].astype(str).to_numpy()
    acc = (pred == truth).mean()
    chance = pd.Series(truth).value_counts(normalize=True).max()
    assert acc > chance + 0.1, (acc, chance)
    conf = query.obs["cell_type_transferred_confidence"]
    assert conf.between(0, 1).all()
