"""``sd.datasets.synthetic_counts``: the always-available data of the unit tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse


def test_shape_types_and_planted_structure():
    import scllm_dsc as sd

    a = sd.datasets.synthetic_counts(600, 200, 4, random_state=1)
    assert a.shape == (600, 200) and sparse.isspmatrix_csr(a.X) and a.X.dtype == np.float32
    X = a.X.toarray()
    assert np.all(X == np.round(X)) and X.min() >= 0
    sizes = a.obs["cell_type"].value_counts(sort=False).to_numpy()
    assert list(a.obs["cell_type"].cat.categories) == ["T cell", "B cell", "monocyte", "NK cell"]
    assert sizes.sum() == 600 and np.all(np.diff(sizes) < 0)  # imbalanced, largest first
    assert a.obs_names.is_unique and a.var_names.is_unique
    # known markers are planted in their type: CD3E in T cells, MS4A1 in B cells, LYZ in monocytes
    assert a.uns["markers"]["T cell"][0] == "CD3E" and "MS4A1" in a.uns["markers"]["B cell"]
    lib = X.sum(1, keepdims=True)
    norm = X / lib
    for t, genes in a.uns["markers"].items():
        inside = a.obs["cell_type"] == t
        idx = [a.var_names.get_loc(g) for g in genes]
        assert norm[inside][:, idx].mean() > 3 * norm[~inside][:, idx].mean(), t
    # negative binomial: over-dispersed against Poisson within a type
    t_cells = X[(a.obs["cell_type"] == "T cell").to_numpy()]
    scaled = t_cells / t_cells.sum(1, keepdims=True) * t_cells.sum(1).mean()
    top = np.argsort(scaled.mean(0))[-20:]
    assert np.median(scaled[:, top].var(0) / scaled[:, top].mean(0)) > 2


def test_deterministic_and_seeded_locally():
    import scllm_dsc as sd

    state = np.random.get_state()[1].copy()  # noqa: NPY002 - checking the legacy global RNG
    a = sd.datasets.synthetic_counts(100, 50, 3, n_markers=5, random_state=3)
    b = sd.datasets.synthetic_counts(100, 50, 3, n_markers=5, random_state=3)
    c = sd.datasets.synthetic_counts(100, 50, 3, n_markers=5, random_state=4)
    assert (a.X != b.X).nnz == 0 and (a.X != c.X).nnz > 0
    assert np.array_equal(np.random.get_state()[1], state)  # noqa: NPY002 - untouched


@pytest.mark.shared
def test_gene_symbols_have_text_in_the_ncbi_table(human_table):
    import pandas as pd

    import scllm_dsc as sd
    from scllm_dsc.datasets import _SYMBOLS

    table = pd.read_csv(human_table, sep="\t", usecols=["symbol", "text_source"])
    source = dict(zip(table["symbol"], table["text_source"], strict=True))
    assert all(source.get(g) in ("refseq_summary", "go_annotations") for g in _SYMBOLS)
    assert len(sd.datasets.synthetic_counts(50, 480, 2).var_names) == 480


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_clusters": 1}, "n_clusters"),
        ({"n_clusters": 11}, "n_clusters"),
        ({"n_vars": 481}, "n_vars"),
        ({"n_vars": 20, "n_markers": 12}, "n_markers"),
        ({"n_obs": 10}, "n_obs"),
    ],
)
def test_errors(kwargs, match):
    import scllm_dsc as sd

    with pytest.raises(ValueError, match=match):
        sd.datasets.synthetic_counts(**kwargs)


def test_planted_types_are_recovered_by_cluster():
    """The clustering finds what was planted (a test that fails if the model breaks)."""
    import torch
    from reliability._helpers import FAST, semantic_standin
    from sklearn.metrics import adjusted_rand_score

    import scllm_dsc as sd

    torch.set_num_threads(1)
    a = sd.datasets.synthetic_counts(300, 200, 3, random_state=0)
    semantic_standin(a)
    fit = {**FAST, "max_epochs": 20, "n_pcs": 20, "model_kwargs": {"n_hidden": 32}}
    sd.tl.cluster(a, n_clusters=3, random_state=0, **fit)
    ari = adjusted_rand_score(a.obs["cell_type"], a.obs["scllm_dsc"])
    assert ari > 0.9, ari  # measured: 1.0 (6 epochs: 0.43, so the bar catches undertraining)
