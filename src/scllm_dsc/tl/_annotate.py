"""Suggest names for clusters from gene knowledge and Cell Ontology texts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scanpy import logging as logg
from scipy import sparse

from .._constants import Key
from .._docs import inject_docs
from .._utils import get_matrix, l2_normalize, looks_like_counts
from ._candidates import ontology_candidates, user_candidates


def _check_inputs(adata, key: str, gene_key: str) -> None:
    if key not in adata.obs:
        raise KeyError(
            f"adata.obs[{key!r}] not found: run `sd.tl.cluster` first, or pass `key=` naming "
            "an obs column of cluster labels."
        )
    missing = [
        where
        for where, ok in (
            (f"varm[{gene_key!r}]", gene_key in adata.varm),
            (f"obsm[{Key.latent(gene_key)!r}]", Key.latent(gene_key) in adata.obsm),
        )
        if not ok
    ]
    if missing:
        raise KeyError(
            f"{' and '.join('adata.' + m for m in missing)} not found: run "
            "`sd.tl.embed_genes(adata, ...)` first, it embeds the gene texts these "
            "suggestions are built from."
        )


def _log_normalised(adata, layer: str | None):
    """A log1p(library-size-normalised) copy of the expression (cells x genes, CSR)."""
    X = get_matrix(adata, layer)
    X = sparse.csr_matrix(X, dtype=np.float32, copy=True)
    if looks_like_counts(X):
        lib = np.asarray(X.sum(1)).ravel()
        scale = np.divide(1e4, lib, out=np.zeros_like(lib, dtype=np.float64), where=lib > 0)
        X = sparse.csr_matrix(sparse.diags(scale.astype(np.float32)) @ X)
        X.data = np.log1p(X.data)
    else:
        if X.nnz and X.data.min() < 0:
            raise ValueError(
                "The expression matrix has negative values (scaled data?). Pass `layer=` "
                "naming raw counts or log-normalised expression."
            )
        logg.info("    expression does not look like counts; used as log-normalised")
    return X


def _rank_weights(n: int) -> np.ndarray:
    """DCG-like weights of ranks 1..n, summing to one."""
    w = 1.0 / np.log2(np.arange(n) + 2.0)
    return w / w.sum()


def cluster_markers(
    adata,
    groups: pd.Series,
    *,
    layer: str | None,
    eligible: np.ndarray,
    n_markers: int,
    method: str,
) -> dict[str, np.ndarray]:
    """Top up-regulated genes per cluster (indices into ``var``), restricted to ``eligible``.

    Runs :func:`scanpy.tl.rank_genes_groups` (one cluster vs. the rest) on a log-normalised
    copy; genes with positive score and log fold change, in rank order.
    """
    import anndata as ad
    import scanpy as sc

    counts = groups.value_counts()
    valid = [str(g) for g in groups.cat.categories if counts.get(g, 0) >= 2]
    out = {str(g): np.zeros(0, dtype=np.int64) for g in groups.cat.categories}
    if len(valid) < 2:
        return out
    tmp = ad.AnnData(
        X=_log_normalised(adata, layer),
        obs=pd.DataFrame({"g": groups.astype(str).values}, index=adata.obs_names),
        var=pd.DataFrame(index=adata.var_names),
    )
    tmp.obs["g"] = tmp.obs["g"].astype("category")
    tmp.var_names_make_unique()
    sc.tl.rank_genes_groups(
        tmp, "g", groups=valid, reference="rest", method=method, n_genes=tmp.n_vars,
        use_raw=False, pts=False, tie_correct=method == "wilcoxon",
    )
    pos = pd.Series(np.arange(tmp.n_vars), index=tmp.var_names)
    for g in valid:
        df = sc.get.rank_genes_groups_df(tmp, group=g)
        idx = pos[df["names"].values].values
        keep = (df["scores"].values > 0) & (df["logfoldchanges"].fillna(0).values > 0)
        keep &= eligible[idx]
        out[g] = idx[keep][:n_markers]
    return out


def _background_z(
    G: np.ndarray,
    C: np.ndarray,
    markers: np.ndarray,
    pool: np.ndarray,
    n_background: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Marker similarity per candidate and its z-score against random gene sets.

    The cluster's marker profile is the rank-weighted sum of its marker genes' text vectors
    (L2-normalised); its cosine with each candidate is compared with the same statistic for
    ``n_background`` random sets of the same size and weights, drawn from ``pool``.
    """
    m = len(markers)
    w = _rank_weights(m)
    profile = l2_normalize((w @ G[markers])[None, :])[0]
    raw = C @ profile
    m_bg = min(m, len(pool))
    w_bg = _rank_weights(m_bg)
    sets = np.stack([rng.choice(pool, size=m_bg, replace=False) for _ in range(n_background)])
    bg = l2_normalize(np.einsum("j,bjd->bd", w_bg, G[sets]))  # n_background x d
    sims = bg @ C.T  # n_background x n_candidates
    mu, sd = sims.mean(0), sims.std(0, ddof=1)
    return raw, (raw - mu) / np.maximum(sd, 1e-8)


def _centroid_scores(Z: np.ndarray, C: np.ndarray, codes: np.ndarray, n_groups: int):
    """Each cluster's mean semantic cell embedding, relative to the mean of all cells,
    projected on each candidate and expressed in cell standard deviations along it."""
    ok = np.linalg.norm(Z, axis=1) > 0
    Zc = Z[ok] - Z[ok].mean(0)
    cov = (Zc.T @ Zc) / max(len(Zc) - 1, 1)
    sd = np.sqrt(np.maximum(np.einsum("cd,de,ce->c", C, cov, C), 1e-12))
    out = np.zeros((n_groups, C.shape[0]))
    codes_ok = codes[ok]
    for k in range(n_groups):
        sel = codes_ok == k
        if sel.any():
            out[k] = (Zc[sel].mean(0) @ C.T) / sd
    return out


def _standardise(S: np.ndarray) -> np.ndarray:
    """Per cluster (row), centre and scale over candidates."""
    sd = S.std(1, keepdims=True)
    return (S - S.mean(1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def embed_candidates(texts: Sequence[str], params: Mapping, model: str | None, device):
    from ..encoders import get_encoder

    kwargs = {}
    if model is None:
        model = params.get("model")
        if model is None:
            raise KeyError(
                "The model used by `sd.tl.embed_genes` is not recorded in "
                "adata.uns['gene_text']['params']['model']; pass `model=`."
            )
        for name in ("pooling", "max_length"):
            if params.get(name) is not None:
                kwargs[name] = params[name]
    enc = get_encoder(model, device=device, **kwargs)
    C = np.asarray(enc.encode(list(texts), show_progress=len(texts) > 256), dtype=np.float64)
    return l2_normalize(C), str(model)


@inject_docs()
def annotate_clusters(
    adata,
    key: str = Key.CLUSTER,
    candidates: Sequence[str] | Mapping[str, str] | None = None,
    *,
    within: str | Sequence[str] | None = None,
    n_top: int = 3,
    n_markers: int = 50,
    use_markers: bool = True,
    marker_weight: float = 0.5,
    n_background: int = 200,
    relative: bool = True,
    de_method: str = "wilcoxon",
    layer: str | None = None,
    gene_key: str = Key.GENE_TEXT,
    model: str | None = None,
    device: str | None = None,
    random_state: int = 0,
    key_added: str | None = None,
    copy: bool = False,
):
    """Suggest cell-type names for clusters from gene knowledge.

    These are **suggestions** for a person to check, not annotations: the scores say which
    candidate texts read most like the cluster's genes, nothing more. A cluster of a type that
    is not among the candidates still gets the closest candidate's name.

    Each candidate cell type is a text (label, synonyms and definition, from the Cell Ontology
    or from the user) embedded with the same frozen text encoder as the genes (cached). Each
    cluster is compared with each candidate in two ways:

    a. **Markers**: the cluster's top up-regulated genes (:func:`scanpy.tl.rank_genes_groups`,
       one vs. rest, on a log-normalised copy of the expression; only genes with text) are
       combined into a rank-weighted profile of their text vectors; its cosine with the
       candidate is turned into a z-score against ``n_background`` random gene sets of the
       same size and weights, drawn (seeded) from expressed genes with text.
    b. **Semantic centroid**: the cluster's mean ``obsm["X_gene_text"]`` minus that of all
       cells, projected on the candidate, in units of the cells' standard deviation along it.

    Both are standardised over candidates per cluster and combined,
    ``marker_weight * a + (1 - marker_weight) * b``; with ``use_markers=False`` only (b) is
    used. Clusters are ranked independently (two clusters can get the same name).

    Parameters
    ----------
    {adata}
    key
        Column of ``adata.obs`` with the cluster labels.
    candidates
        The names to choose from: ``None`` takes Cell Ontology terms (see ``within``; needs
        ``pip install "scllm-dsc[ontology]"``); a list of names (names that are Cell Ontology
        labels or ids get the term's synonyms and definition when the package is installed);
        or a dict of name -> description.
    within
        With ontology candidates, the subset of the Cell Ontology to draw them from: a
        preset (``"immune"``/``"blood"``, ``"pancreas"``, ``"brain"``), a CL id or label
        (the term and its descendants, e.g. ``"CL:0000988"`` or ``"hematopoietic cell"``),
        or a list of these. ``None`` uses all current terms (thousands; slower and less
        precise).
    n_top
        Number of suggestions per cluster kept in the ranking table.
    n_markers
        Marker genes per cluster.
    use_markers
        Use the marker-gene score (a); ``False`` ranks by the semantic centroid (b) alone.
    marker_weight
        Weight of (a) against (b) when ``use_markers``.
    n_background
        Random gene sets per cluster for the calibration of (a).
    relative
        Subtract from each candidate's marker score its mean over clusters (with three or
        more clusters), so a candidate that resembles every cluster's markers (a generic
        term) does not win them all; the semantic centroid score is relative to all cells
        anyway.
    de_method
        Test of :func:`scanpy.tl.rank_genes_groups`.
    layer
        Layer with raw counts (or log-normalised expression) for the marker genes; ``None``
        uses ``adata.X``.
    gene_key
        ``key_added`` of :func:`scllm_dsc.tl.embed_genes`.
    model
        Text encoder for the candidates; ``None`` uses the one recorded by
        :func:`~scllm_dsc.tl.embed_genes` (the candidate and gene vectors must share it).
    {device}
    {random_state}
    key_added
        Defaults to ``f"{{key}}_annotation"``.
    {copy}

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``, with

    - ``obs[key_added]``: the top suggestion of each cell's cluster (categorical);
    - ``uns[key_added]``: ``"ranking"`` (one row per cluster and rank: ``cluster``,
      ``rank``, ``name``, ``term_id``, ``score``, ``marker_score``, ``centroid_score``,
      ``n_cells``), ``"scores"`` (clusters x candidates, combined score), ``"markers"``
      (cluster -> marker genes used), ``"candidates"`` (name, term_id, text) and
      ``"params"``.
    """
    from .._utils import resolve_adata

    ad = resolve_adata(adata, None)
    _check_inputs(ad, key, gene_key)
    if candidates is not None and within is not None:
        raise ValueError("Pass either `candidates` (your own list) or `within` (ontology subset).")
    if n_top < 1 or n_markers < 1:
        raise ValueError("`n_top` and `n_markers` must be positive.")
    if not 0.0 <= marker_weight <= 1.0:
        raise ValueError("`marker_weight` must lie in [0, 1].")
    key_added = key_added or f"{key}_annotation"

    groups = ad.obs[key]
    if groups.isna().any():
        raise ValueError(f"adata.obs[{key!r}] has missing values; label every cell.")
    groups = groups.astype("category").cat.remove_unused_categories()
    names = [str(c) for c in groups.cat.categories]
    codes = groups.cat.codes.to_numpy()

    G = np.asarray(ad.varm[gene_key], dtype=np.float64)
    found_col = f"{gene_key}_found"
    found = (
        ad.var[found_col].to_numpy(bool) if found_col in ad.var else np.linalg.norm(G, axis=1) > 0
    )
    found &= np.linalg.norm(G, axis=1) > 0
    if not found.any():
        raise ValueError(f"adata.varm[{gene_key!r}] has no gene with text.")
    Z = np.asarray(ad.obsm[Key.latent(gene_key)], dtype=np.float64)
    params_in = dict(ad.uns.get(gene_key, {}).get("params", {}))

    cand = ontology_candidates(within) if candidates is None else user_candidates(candidates)
    logg.info(f"ranking {len(cand)} candidate names for {len(names)} clusters")
    C, model_used = embed_candidates(cand["text"].tolist(), params_in, model, device)
    if C.shape[1] != G.shape[1]:
        raise ValueError(
            f"Candidate vectors ({C.shape[1]}-d) and gene vectors ({G.shape[1]}-d) differ: "
            "use the model that `sd.tl.embed_genes` used."
        )

    centroid = _centroid_scores(Z, C, codes, len(names))
    marker_raw = np.full_like(centroid, np.nan)
    marker_z = np.full_like(centroid, np.nan)
    markers: dict[str, np.ndarray] = {g: np.zeros(0, dtype=np.int64) for g in names}
    if use_markers:
        X = get_matrix(ad, layer)
        detected = np.asarray((X > 0).sum(0)).ravel()
        pool = np.flatnonzero(found & (detected >= max(3, int(0.01 * ad.n_obs))))
        if len(pool) < 10:
            pool = np.flatnonzero(found & (detected > 0))
        markers = cluster_markers(
            ad, groups, layer=layer, eligible=found, n_markers=n_markers, method=de_method
        )
        rng = np.random.default_rng(random_state)
        for k, g in enumerate(names):
            if len(markers[g]) and len(pool) >= 2:
                marker_raw[k], marker_z[k] = _background_z(
                    G, C, markers[g], pool, n_background, rng
                )
        no_markers = [g for g in names if not len(markers[g])]
        if no_markers:
            logg.warning(
                f"no marker genes with text for clusters {no_markers[:5]}; ranked by the "
                "semantic centroid alone"
            )

    score = _standardise(centroid)
    if use_markers:
        has = ~np.isnan(marker_z[:, 0])
        if relative and has.sum() >= 3:
            # what is specific to this cluster: a candidate that reads like every cluster's
            # markers (e.g. a generic immune term) does not win them all
            marker_z[has] -= marker_z[has].mean(0)
        score[has] = (1 - marker_weight) * score[has] + marker_weight * _standardise(
            marker_z[has]
        )

    # rank: descending score, ties by candidate order (deterministic)
    order = np.argsort(-score, axis=1, kind="stable")
    n_keep = min(n_top, len(cand))
    sizes = np.bincount(codes, minlength=len(names))
    rows = []
    for k, g in enumerate(names):
        for r in range(n_keep):
            c = order[k, r]
            rows.append(
                {
                    "cluster": g,
                    "rank": r + 1,
                    "name": cand["name"].iat[c],
                    "term_id": cand["term_id"].iat[c],
                    "score": float(score[k, c]),
                    "marker_score": float(marker_z[k, c]),
                    "centroid_score": float(centroid[k, c]),
                    "n_cells": int(sizes[k]),
                }
            )
    ranking = pd.DataFrame(rows)
    top1 = ranking[ranking["rank"] == 1].set_index("cluster")["name"]
    labels = pd.Categorical(
        np.asarray(top1.reindex(names).values)[codes],
        categories=list(dict.fromkeys(top1.reindex(names).values)),
    )
    var_names = np.asarray(ad.var_names)
    result = {
        "ranking": ranking,
        "scores": pd.DataFrame(score, index=names, columns=cand["name"].tolist()),
        "markers": {g: [str(s) for s in var_names[markers[g]]] for g in names},
        "candidates": cand.reset_index(drop=True),
        "params": {
            "key": key,
            "within": within if within is None or isinstance(within, str) else list(within),
            "candidates": "ontology" if candidates is None else (
                "dict" if isinstance(candidates, Mapping) else "list"
            ),
            "n_candidates": int(len(cand)),
            "n_top": int(n_top),
            "n_markers": int(n_markers),
            "use_markers": bool(use_markers),
            "marker_weight": float(marker_weight),
            "n_background": int(n_background),
            "relative": bool(relative),
            "de_method": de_method,
            "layer": layer,
            "gene_key": gene_key,
            "model": model_used,
            "random_state": int(random_state),
        },
    }
    result["params"] = {k: v for k, v in result["params"].items() if v is not None}

    if copy:
        adata = adata.copy()
        ad = resolve_adata(adata, None)
    ad.obs[key_added] = pd.Categorical(labels, categories=labels.categories)
    ad.uns[key_added] = result
    logg.info(
        f"added\n    obs[{key_added!r}], top suggestion per cluster\n"
        f"    uns[{key_added!r}], ranking table and scores"
    )
    return adata if copy else None
