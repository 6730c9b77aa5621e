"""Label-free numbers on how well the semantic and structural views agree."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._checks import (
    _cluster_hint,
    as_categorical,
    require,
    require_obs_column,
    semantic_key,
    structural_key,
)
from .._constants import Key
from .._docs import inject_docs

if TYPE_CHECKING:
    from anndata import AnnData


def _unit_rows(X) -> np.ndarray:
    from sklearn.preprocessing import normalize

    X = X.toarray() if hasattr(X, "toarray") else X
    return normalize(np.asarray(X, dtype=np.float64))  # zero rows stay zero


def _offset_permutation(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation without fixed points (no cell is paired with itself)."""
    perm = rng.permutation(n)
    if n < 2:
        return perm
    fixed = np.flatnonzero(perm == np.arange(n))
    # swap every fixed point with its successor in the permutation array
    for i in fixed:
        j = (i + 1) % n
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def _retrieval(query: np.ndarray, target: np.ndarray, k: int, labels: np.ndarray):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k).fit(target)  # unit rows: euclidean order == cosine
    idx = nn.kneighbors(query, return_distance=False)
    own = np.arange(query.shape[0])
    top1 = idx[:, 0] == own
    topk = (idx == own[:, None]).any(axis=1)
    same_cluster = labels[idx[:, 0]] == labels
    return top1, topk, same_cluster


@inject_docs()
def alignment_scores(
    adata: AnnData,
    key: str = Key.CLUSTER,
    *,
    groupby: str | None = None,
    k: int = 10,
    max_cells: int | None = 5000,
    random_state: int = 0,
) -> dict[str, Any]:
    """Agreement between the semantic and the structural view of each cell.

    Reads the two projected views written by :func:`scllm_dsc.tl.cluster`
    (``adata.obsm["X_<key>_semantic"]`` and ``adata.obsm["X_<key>_structural"]``, rows in the
    shared space) and measures, on at most ``max_cells`` randomly chosen cells:

    - the cosine similarity of each cell's two views (*matched*) against that of a cell's
      semantic view with another random cell's structural view (*random*);
    - cross-view retrieval: how often the nearest structural vector of a cell's semantic
      vector is the cell itself (top-1), among its ``k`` nearest (top-k), or a cell of the same
      group; and the same from structural to semantic. Rates are averaged over both directions.

    Nothing here looks at true labels unless ``groupby`` names them.

    Parameters
    ----------
    {adata}
    key
        ``key_added`` of :func:`scllm_dsc.tl.cluster`.
    groupby
        Column of ``adata.obs`` defining the groups of the per-group scores and of the
        same-group retrieval. Default: the clusters ``adata.obs[key]``.
    k
        Neighbourhood size of the top-k retrieval rate.
    max_cells
        Subsample to this many cells (``None``: all cells). The nearest-neighbour search is
        over the subsample, so rates on different subsample sizes are not comparable; the chance
        levels are reported alongside.
    {random_state}

    Returns
    -------
    A dict with

    ``"summary"``
        :class:`pandas.Series`: ``n_cells``, ``k``, ``matched_cosine`` and ``random_cosine``
        (means), ``cosine_gap`` (their difference), ``recall_at_1``, ``recall_at_k``,
        ``same_group`` (retrieval rates, both directions averaged), ``recall_at_1_sem2str``,
        ``recall_at_1_str2sem``, and the chance levels ``chance_recall_at_1``,
        ``chance_recall_at_k``, ``chance_same_group``.
    ``"per_group"``
        :class:`pandas.DataFrame` indexed by group: ``n_cells``, ``matched_cosine``,
        ``random_cosine``, ``recall_at_1``, ``recall_at_k``, ``same_group``.
    ``"matched_cosine"``, ``"random_cosine"``
        Per-cell arrays over the subsample.
    ``"obs_names"``
        The cells of the subsample, in order.
    ``"groupby"``
        The grouping column used.
    """
    sem_key, str_key = semantic_key(key), structural_key(key)
    require(adata, "obsm", sem_key, _cluster_hint(key))
    require(adata, "obsm", str_key, _cluster_hint(key))
    groupby = key if groupby is None else groupby
    require_obs_column(
        adata, groupby, _cluster_hint(key) if groupby == key else None
    )
    if k < 1:
        raise ValueError(f"`k` must be at least 1, got {k}.")

    n_all = adata.n_obs
    rng = np.random.default_rng(random_state)
    if max_cells is not None and n_all > max_cells:
        cells = np.sort(rng.choice(n_all, size=max_cells, replace=False))
    else:
        cells = np.arange(n_all)
    n = cells.size
    if n < 2:
        raise ValueError("Alignment scores need at least two cells.")

    sem = _unit_rows(adata.obsm[sem_key][cells])
    struc = _unit_rows(adata.obsm[str_key][cells])
    if sem.shape[1] != struc.shape[1]:
        raise ValueError(
            f"`adata.obsm[{sem_key!r}]` has {sem.shape[1]} columns and "
            f"`adata.obsm[{str_key!r}]` {struc.shape[1]}: the views must lie in the shared "
            "space of the same model."
        )
    groups = as_categorical(adata.obs[groupby].to_numpy()[cells])
    labels = groups.cat.codes.to_numpy()

    matched = np.einsum("ij,ij->i", sem, struc)
    partner = _offset_permutation(n, rng)
    random = np.einsum("ij,ij->i", sem, struc[partner])

    k_eff = min(k, n)
    t1_a, tk_a, sc_a = _retrieval(sem, struc, k_eff, labels)
    t1_b, tk_b, sc_b = _retrieval(struc, sem, k_eff, labels)
    top1 = (t1_a.astype(float) + t1_b) / 2
    topk = (tk_a.astype(float) + tk_b) / 2
    same = (sc_a.astype(float) + sc_b) / 2

    frac = np.bincount(labels, minlength=len(groups.cat.categories)) / n
    summary = pd.Series(
        {
            "n_cells": n,
            "k": k_eff,
            "matched_cosine": matched.mean(),
            "random_cosine": random.mean(),
            "cosine_gap": matched.mean() - random.mean(),
            "recall_at_1": top1.mean(),
            "recall_at_k": topk.mean(),
            "same_group": same.mean(),
            "recall_at_1_sem2str": t1_a.mean(),
            "recall_at_1_str2sem": t1_b.mean(),
            "chance_recall_at_1": 1.0 / n,
            "chance_recall_at_k": k_eff / n,
            "chance_same_group": float(np.sum(frac**2)),
        },
        dtype=float,
    )
    per_cell = pd.DataFrame(
        {
            "group": groups.to_numpy(),
            "matched_cosine": matched,
            "random_cosine": random,
            "recall_at_1": top1,
            "recall_at_k": topk,
            "same_group": same,
        }
    )
    per_cell["group"] = pd.Categorical(per_cell["group"], categories=groups.cat.categories)
    per_group = per_cell.groupby("group", observed=False).mean()
    per_group.insert(0, "n_cells", per_cell.groupby("group", observed=False).size())
    per_group.index = per_group.index.astype(str)
    per_group.index.name = groupby
    return {
        "summary": summary,
        "per_group": per_group,
        "matched_cosine": matched,
        "random_cosine": random,
        "obs_names": adata.obs_names[cells].copy(),
        "groupby": groupby,
    }
