"""Over-cluster and merge (graph/_merge.py) on synthetic counts with planted types."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

from scllm_dsc.graph import merge_clusters, overcluster_merge
from scllm_dsc.graph._merge import log_normalize

SIZES = (600, 150, 50)


def _planted(seed: int = 0, n_genes: int = 200, sizes: tuple[int, ...] = SIZES):
    """Counts of planted types (default 600/150/50 cells), each with 15 marker genes 8x up."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 0.5, n_genes)
    rows, y = [], []
    for t, n in enumerate(sizes):
        mu = base.copy()
        mu[15 * t: 15 * (t + 1)] *= 8
        depth = rng.lognormal(0, 0.2, (n, 1))
        rows.append(rng.poisson(mu[None, :] * depth))
        y += [t] * n
    X = sparse.csr_matrix(np.vstack(rows).astype(np.float32))
    L = log_normalize(X).toarray()
    L -= L.mean(0)
    u, s, _ = np.linalg.svd(L, full_matrices=False)
    return X, (u[:, :10] * s[:10]).astype(np.float32), np.asarray(y)


@pytest.fixture(scope="module")
def planted():
    return _planted()


def test_merge_to_k_recovers_types(planted):
    X, z, y = planted
    labels = overcluster_merge(z, X, 3, random_state=0)
    assert len(np.unique(labels)) == 3
    assert adjusted_rand_score(y, labels) >= 0.95
    # labels are 0..k-1 by decreasing size
    assert (np.diff(np.bincount(labels)) <= 0).all()


def test_auto_stops_at_the_planted_number(planted):
    X, z, y = planted
    labels = overcluster_merge(z, X, None, resolution=3.0, random_state=0)
    assert len(np.unique(labels)) == 3
    assert adjusted_rand_score(y, labels) >= 0.95


def test_merge_clusters_history_and_markers(planted):
    X, z, y = planted
    from scllm_dsc.graph._leiden import _graph

    W = _graph(z, 15, 0).obsp["connectivities"]
    # an over-clustering: each type cut into 4 arbitrary parts
    rng = np.random.default_rng(1)
    start = 4 * y + rng.integers(0, 4, len(y))
    out, hist = merge_clusters(start, W, log_normalize(X), None, return_history=True)
    assert adjusted_rand_score(y, out) == pytest.approx(1.0)
    # 12 -> 3: nine merges, each of a pair told apart by fewer than min_markers genes
    assert [h[0] for h in hist] == list(range(12, 3, -1))
    assert all(h[1] < 10 for h in hist)
    out1 = merge_clusters(start, W, log_normalize(X), 1)
    assert (out1 == 0).all()


def test_separation_counts_splits_without_markers(planted):
    from scllm_dsc.graph._leiden import _graph
    from scllm_dsc.graph._merge import separation

    X, z, y = planted
    W = _graph(z, 15, 0).obsp["connectivities"]
    Xl = log_normalize(X)
    lowest, weak = separation(y, W, Xl)
    assert weak == 0 and lowest >= 10  # every planted type has 15 marker genes
    # the large type cut in two halves (no gene tells them apart), the small ones merged
    split = y.copy()
    big = np.flatnonzero(y == 0)
    split[big[: len(big) // 2]] = 3
    split[y == 2] = 1
    lowest, weak = separation(split, W, Xl)
    assert weak == 2 and lowest < 10


@pytest.mark.parametrize(("n_clusters", "init"), [(None, "merge"), (3, "merge"), (3, "auto")])
def test_model_merge_init(planted, n_clusters, init):
    import anndata as ad

    import scllm_dsc as sd

    X, _, y = planted
    a = ad.AnnData(X)
    a.var_names = [f"g{i}" for i in range(a.n_vars)]
    sd.model.SCLLMDSC.setup_anndata(a, semantic_keys=None, n_top_genes=150, n_pcs=10)
    model = sd.model.SCLLMDSC(a, n_clusters=n_clusters, n_latent=8, n_hidden=32, init=init)
    model.train(max_epochs=3, batch_size=200, random_state=0, enable_progress_bar=False)
    k = model.n_clusters
    assert model.predict(soft=True).shape == (a.n_obs, k)
    if n_clusters is not None:
        assert k == n_clusters
        if init == "auto":
            # both candidate partitions were scored; the merge is taken only when it has no
            # cluster without markers, k-means has, and restarts reproduce it at least as well
            choice = model.init_choice_
            merge_clean = choice["merge"][1] == 0 < choice["kmeans"][1]
            assert set(choice) == {"chosen", "kmeans", "merge"} | (
                {"stability"} if merge_clean else set())
            stable = merge_clean and (choice["stability"]["merge"]
                                      >= choice["stability"]["kmeans"])
            assert choice["chosen"] == ("merge" if stable else "kmeans")
    else:
        assert 2 <= k <= 6
    assert adjusted_rand_score(y, model.predict()) >= 0.8


@pytest.fixture(scope="module")
def large_type():
    """Counts with a large type and two small ones, and a latent where the large type is
    elongated and the small ones lie close together: k-means at k=3 cuts the large type in
    two and puts one centre on both small types."""
    import anndata as ad

    import scllm_dsc as sd

    X, _, y = _planted(sizes=(900, 60, 40))
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [0.0, 8.0], [1.0, 8.0]])
    spread = np.array([[3.0, 0.3], [0.1, 0.1], [0.1, 0.1]])
    z = (centres[y] + rng.normal(size=(len(y), 2)) * spread[y]).astype(np.float32)
    a = ad.AnnData(X)
    sd.model.SCLLMDSC.setup_anndata(a, semantic_keys=None, n_top_genes=150, n_pcs=10)
    return sd.model.SCLLMDSC(a, n_clusters=3, n_latent=8, n_hidden=32, init="auto"), z, y


def test_auto_init_keeps_a_large_type_whole(large_type):
    """The merge partition keeps the large type whole and is the one chosen."""
    model, z, y = large_type
    labels = model._pick_partition(z, None, 0)
    choice = model.init_choice_
    assert choice["chosen"] == "merge"
    assert choice["kmeans"][1] > 0 and choice["merge"][1] == 0  # k-means: a split, no markers
    assert choice["stability"]["merge"] >= choice["stability"]["kmeans"]
    assert adjusted_rand_score(y, labels) == pytest.approx(1.0)


def test_auto_init_needs_a_reproducible_merge(large_type, monkeypatch):
    """A merge partition that restarts do not reproduce is not taken over k-means."""
    import scllm_dsc.graph._merge as merge_module

    model, z, _ = large_type
    real = merge_module._overcluster_merge

    def unstable(tmp, Xl, n_clusters, *, random_state=0, **kwargs):
        if random_state == 0:
            return real(tmp, Xl, n_clusters, random_state=random_state, **kwargs)
        return np.random.default_rng(random_state).integers(0, n_clusters, tmp.n_obs)

    monkeypatch.setattr(merge_module, "_overcluster_merge", unstable)
    model._pick_partition(z, None, 0)
    choice = model.init_choice_
    assert choice["merge"][1] == 0 < choice["kmeans"][1]  # the marker rule alone: merge
    assert choice["stability"]["merge"] < choice["stability"]["kmeans"]
    assert choice["chosen"] == "kmeans"


def test_model_rejects_unknown_init(planted):
    import anndata as ad

    import scllm_dsc as sd

    a = ad.AnnData(planted[0])
    sd.model.SCLLMDSC.setup_anndata(a, semantic_keys=None, n_top_genes=150, n_pcs=10)
    with pytest.raises(ValueError, match="merge"):
        sd.model.SCLLMDSC(a, n_clusters=3, init="spectral")
