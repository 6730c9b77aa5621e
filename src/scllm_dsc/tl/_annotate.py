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
from ._semantic import normalize_block


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
    X = sparse.csr_matrix(get_matrix(adata, layer), dtype=np.float32)
    is_counts = looks_like_counts(X)
    if not is_counts:
        if X.nnz and X.data.min() < 0:
            raise ValueError(
                "The expression matrix has negative values (scaled data?). Pass `layer=` "
                "naming raw counts or log-normalised expression."
            )
        logg.info("    expression does not look like counts; used as log-normalised")
    return sparse.csr_matrix(normalize_block(X, is_counts), dtype=np.float32)


def _cluster_groups(adata, key: str):
    """``adata.obs[key]`` as a categorical without unused categories; every cell labelled."""
    groups = adata.obs[key]
    if groups.isna().any():
        raise ValueError(f"adata.obs[{key!r}] has missing values; label every cell.")
    return groups.astype("category").cat.remove_unused_categories()


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
    C = enc.encode(list(texts), show_progress=len(texts) > 256, desc="cell type texts")
    C = np.asarray(C, dtype=np.float64)
    return l2_normalize(C), str(model)


def _similarity_annotation(
    ad,
    key: str,
    candidates,
    *,
    within,
    n_top: int,
    n_markers: int,
    use_markers: bool,
    marker_weight: float,
    n_background: int,
    relative: bool,
    de_method: str,
    layer: str | None,
    gene_key: str,
    model: str | None,
    device,
    random_state: int,
):
    """The earlier text-similarity ranking (``method="similarity"``): cosine of the
    candidates' text vectors with the cluster's marker-gene text profile (z-scored against
    random gene sets) and with its mean semantic cell embedding."""
    _check_inputs(ad, key, gene_key)
    if candidates is not None and within is not None:
        raise ValueError("Pass either `candidates` (your own list) or `within` (ontology subset).")
    if n_top < 1 or n_markers < 1:
        raise ValueError("`n_top` and `n_markers` must be positive.")
    if not 0.0 <= marker_weight <= 1.0:
        raise ValueError("`marker_weight` must lie in [0, 1].")

    groups = _cluster_groups(ad, key)
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
    return labels, result


# --------------------------------------------------------------------------------------
# Marker-based annotation (default): explicit Cell Ontology and marker knowledge
# --------------------------------------------------------------------------------------

#: Broad lineages of the first (coarse) pass that narrows the candidates from the data.
LINEAGES = {
    "CL:0000988": "hematopoietic cell",
    "CL:0000066": "epithelial cell",
    "CL:0002319": "neural cell",
    "CL:0000115": "endothelial cell",
    "CL:0002320": "connective tissue cell",
    "CL:0000187": "muscle cell",
    "CL:0000586": "germ cell",
    "CL:0000669": "pericyte",
}

UNASSIGNED = "unassigned"


def default_sources() -> list[str]:
    """Marker sources used when none are named: the Cell Ontology's own texts with the
    marker database when it is installed, else with the gene-text links.

    Gene-text links are mentions ("...a chemoattractant for blood monocytes", "...T-cell/
    B-cell interaction") more often than statements of expression; beside the curated
    database they add noise (see the benchmarks page), so they fill in only without it.
    """
    from ..knowledge._cell_markers import consensus_available

    return ["CL", "cellconsensus"] if consensus_available() else ["CL", "gene text"]


def cluster_effects(X, codes: np.ndarray, n_groups: int, eps: float = 0.05):
    """Per cluster and gene: effect size against all other cells and detection rates.

    ``X`` is log-normalised (cells x genes). Returns ``d`` (mean difference over the pooled
    standard deviation, ``eps`` added to the variance so genes barely detected anywhere do
    not get huge effects), ``lfc`` (difference of means, log1p units), ``pct_in`` and
    ``pct_out`` (fraction of cells with the gene detected), each clusters x genes.
    """
    X = sparse.csr_matrix(X)
    n = X.shape[0]
    ind = sparse.csr_matrix(
        (np.ones(n, dtype=np.float64), (codes, np.arange(n))), shape=(n_groups, n)
    )
    size = np.asarray(ind.sum(1)).ravel()[:, None]
    s1 = np.asarray((ind @ X).todense(), dtype=np.float64)
    X2 = X.copy()
    X2.data = X2.data.astype(np.float64) ** 2
    s2 = np.asarray((ind @ X2).todense())
    Xb = X.copy()
    Xb.data = (Xb.data > 0).astype(np.float64)
    nz = np.asarray((ind @ Xb).todense())
    t1, t2, tnz = s1.sum(0), s2.sum(0), nz.sum(0)
    rest = np.maximum(n - size, 1)
    m_in = s1 / np.maximum(size, 1)
    m_out = (t1 - s1) / rest
    v_in = np.maximum(s2 / np.maximum(size, 1) - m_in**2, 0)
    v_out = np.maximum((t2 - s2) / rest - m_out**2, 0)
    d = (m_in - m_out) / np.sqrt((v_in + v_out) / 2 + eps)
    return {
        "d": d,
        "lfc": m_in - m_out,
        "pct_in": nz / np.maximum(size, 1),
        "pct_out": (tnz - nz) / rest,
    }


def _term_markers(mk: pd.DataFrame, gene_col: dict[str, int]):
    """{term: {(gene column, sign): (weight, [(source, text), ...])}} for genes in data."""
    out: dict[str, dict[tuple[int, int], list]] = {}
    for t, g, sign, w, src, text in mk[["term_id", "gene", "sign", "weight", "source",
                                        "text"]].itertuples(index=False):
        j = gene_col.get(g)
        if j is None:
            continue
        slot = out.setdefault(t, {}).setdefault((j, int(sign)), [0.0, []])
        # several sources agreeing strengthen a link (capped)
        slot[0] = min(slot[0] + float(w), 1.5)
        slot[1].append((src, text))
    return out


#: label endings by which the Cell Ontology restricts a term to a taxon, and the species of
#: ours the taxon includes
_TAXON_TAGS = {
    ", human": ("human",), "(Homo sapiens)": ("human",), "(Primate)": ("human",),
    ", mouse": ("mouse",), "(Mus musculus)": ("mouse",), "(Mmus)": ("mouse",),
    "(sensu Mus)": ("mouse",), "(sensu Nematoda and Protostomia)": (),
    "(sensu Nematoda)": (), "(sensu Teleostei)": (), "(sensu Arthropoda)": (),
    "(sensu Arthopoda)": (), "(sensu Endopterygota)": (), "(sensu Fungi)": (),
}


def _other_species(label: str, species: str) -> bool:
    """Whether a term's label restricts it to a taxon that excludes ``species``."""
    return any(label.endswith(tag) and species not in taxa
               for tag, taxa in _TAXON_TAGS.items())


def _effective(term: str, own: dict, cl, decay: float, max_steps: int = 2):
    """A term's markers plus its ancestors' (weight times ``decay`` per is_a step)."""
    eff = {k: (v[0], v[1], 0) for k, v in own.get(term, {}).items()}
    for a, step in cl.ancestors(term, max_steps).items():
        for k, v in own.get(a, {}).items():
            w = v[0] * decay**step
            if k not in eff or eff[k][0] < w:
                eff[k] = (w, v[1], step)
    return eff


def _score(eff: dict, d_row: np.ndarray, shrink: float, clip: float = 3.0):
    """Weighted mean effect of positive markers minus that of negative markers present."""
    if not eff:
        return np.nan, 0.0
    pos = [(w, j) for (j, s), (w, _, _) in eff.items() if s > 0]
    neg = [(w, j) for (j, s), (w, _, _) in eff.items() if s < 0]
    wp = sum(w for w, _ in pos)
    sp = sum(w * np.clip(d_row[j], -1.0, clip) for w, j in pos) / (wp + shrink) if pos else 0.0
    sn = (sum(w * np.clip(d_row[j], 0.0, clip) for w, j in neg) / (sum(w for w, _ in neg) + shrink)
          if neg else 0.0)
    return float(sp - sn), wp


def _supported(eff: dict, d_row: np.ndarray, min_effect: float = 0.5) -> bool:
    return any(s > 0 and d_row[j] > min_effect for (j, s) in eff)


def _specific(child: dict, parent: dict, d_row: np.ndarray, shrink: float,
              threshold: float | None) -> bool:
    """Whether the child's markers that its ancestor lacks are clearly up (score of those
    markers alone at least ``threshold``)."""
    if threshold is None:
        return False
    extra = {k: v for k, v in child.items() if k not in parent and k[1] > 0}
    return bool(extra) and _score(extra, d_row, shrink)[0] >= threshold


def _rarity(terms: Sequence[str], common: int) -> np.ndarray:
    """Per term, how many decades fewer than ``common`` marker lists the marker database
    merged for it (0 for terms reported at least ``common - 1`` times)."""
    from ..knowledge._cell_markers import consensus_sources

    n_src = consensus_sources(terms)
    return np.array([max(0.0, np.log10(common / (1.0 + n_src[t]))) for t in terms])


def _common_parent(chosen, s_row, d_row, tindex, effs, cl, tie, steps, min_score, top):
    """The first suggestion and the next one not on its is_a path nearly tied: name their
    nearest common is_a ancestor (within ``steps`` of the first, a supported candidate)
    and keep both below it. ``s_row``/``d_row``: one cluster's term scores/gene effects;
    ``top``: its best term score, against which "nearly tied" is judged (the first
    suggestion may have climbed to a lower-scoring ancestor)."""
    def score(t):
        return s_row[tindex[t]]

    t1 = chosen[0]
    up1 = cl.ancestors(t1, steps)
    for c in chosen[1:]:
        if c in up1 or t1 in cl.ancestors(c):
            continue
        if score(c) < top - tie:
            return chosen
        upc = cl.ancestors(c, steps + 1)
        common = [a for a in up1 if a in upc and a in tindex
                  and score(a) >= min_score and _supported(effs[a], d_row)]
        if not common:
            return chosen
        a = min(common, key=lambda x: (up1[x] + upc[x], -score(x), x))
        return [a, *[t for t in chosen if t != a]]
    return chosen


def _distinct(picks: list[list[str]], firsts: list[str | None]) -> list[list[str]]:
    """Clusters that the climb or a near tie gave one name, but whose own best terms
    (``firsts``) differ from each other, are named by those terms: a name should tell
    clusters apart where the data do. ``picks``: each cluster's suggestions, best first."""
    shared: dict[str, list[int]] = {}
    for k, chosen in enumerate(picks):
        if chosen:
            shared.setdefault(chosen[0], []).append(k)
    out = [list(p) for p in picks]
    for ks in shared.values():
        own_best = [firsts[k] for k in ks]
        for k in ks:
            f = firsts[k]
            if len(ks) > 1 and f is not None and f != out[k][0] and own_best.count(f) == 1:
                out[k] = [f, *[t for t in out[k] if t != f]]
    return out


def marker_annotation(
    ad,
    key: str,
    *,
    terms: Sequence[str],
    names: Mapping[str, str] | None = None,
    sources: Sequence[str] | None = None,
    species: str | None = None,
    knowledge=None,
    layer: str | None = None,
    n_top: int = 3,
    min_score: float = 0.25,
    min_own: float = 0.25,
    decay: float = 0.5,
    shrink: float = 1.0,
    margin: float = 0.15,
    contrast: float = 0.5,
    tie: float = 0.2,
    tie_steps: int = 2,
    keep_specific: float | None = 0.5,
    rarity: float = 0.5,
    common: int = 10,
    distinct: bool = True,
    n_evidence: int = 8,
    min_evidence: float = 0.25,
    narrow: bool = False,
):
    """Rank Cell Ontology ``terms`` for each cluster by the expression of their markers
    (``sources=None``: :func:`default_sources`)."""
    from ..knowledge._cell_markers import (
        cell_ontology,
        collect_markers,
        mouse_to_human,
        to_human,
    )
    from ..knowledge._species import infer_species

    sources = default_sources() if sources is None else list(sources)
    logg.info(f"scoring {len(terms)} Cell Ontology terms with markers from {sources}")
    groups = _cluster_groups(ad, key)
    clusters = [str(c) for c in groups.cat.categories]
    codes = groups.cat.codes.to_numpy()
    if species is None:
        species = infer_species(list(ad.var_names))
    kpath = None if knowledge is None else str(knowledge)
    orth = mouse_to_human(kpath) if species != "human" else None
    human = to_human(ad.var_names, species, orth)
    gene_col: dict[str, int] = {}
    for j, g in enumerate(human):
        if g and g not in gene_col:
            gene_col[g] = j

    cl = cell_ontology()
    terms = [t for t in dict.fromkeys(terms) if t in cl.label
             and not _other_species(cl.label[t], species)]
    X = _log_normalised(ad, layer)
    eff_stats = cluster_effects(X, codes, len(clusters))
    D = eff_stats["d"]

    # coarse first pass: the broad lineages the clusters belong to (markers of the lineage
    # terms only, so the fine pass collects markers for the narrowed candidates alone)
    lineages_found: list[str] = []
    if narrow:
        lin = list(LINEAGES)
        # a lineage scores as its best-supported term among itself and five levels below
        members = {r: [r, *cl.descendants(r, 5)] for r in lin}
        pool = list(dict.fromkeys(t for r in lin for t in members[r]))
        own_lin = _term_markers(
            collect_markers(pool, sources, knowledge=kpath, genes=list(gene_col)), gene_col
        )
        L = np.full((len(clusters), len(lin)), -np.inf)
        for j, r in enumerate(lin):
            for t in members[r]:
                e = _effective(t, own_lin, cl, decay, 0)
                if e:
                    sc_ = np.array([_score(e, D[k], shrink)[0] for k in range(len(clusters))])
                    L[:, j] = np.fmax(L[:, j], np.nan_to_num(sc_, nan=-np.inf))
        best = np.argmax(L, axis=1)
        lineages_found = sorted({lin[b] for k, b in enumerate(best) if L[k, b] >= min_score})
        if lineages_found:
            keep = set()
            for root in lineages_found:
                keep |= {root, *cl.descendants(root)}
            narrowed = [t for t in terms if t in keep]
            if narrowed:
                terms = narrowed
        logg.info(f"    lineages found: {[cl.label[t] for t in lineages_found]}")

    anc = {a for t in terms for a in cl.ancestors(t, 2)}
    need = list(dict.fromkeys([*terms, *sorted(anc)]))
    mk = collect_markers(need, sources, knowledge=kpath, genes=list(gene_col))
    own = _term_markers(mk, gene_col)

    # a term needs markers of its own to be named (inherited ones alone say nothing new)
    effs = {t: _effective(t, own, cl, decay) for t in terms if own.get(t)}
    if not effs:
        raise ValueError(
            "None of the candidate terms has a marker gene in this dataset; widen `within=` "
            "or add the marker database (`sources=` with 'cellconsensus')."
        )
    tlist = list(effs)
    S = np.full((len(clusters), len(tlist)), np.nan)
    own_S = np.full_like(S, np.nan)
    for i, t in enumerate(tlist):
        own_eff = {k: (v[0], v[1], 0) for k, v in own.get(t, {}).items()}
        for k in range(len(clusters)):
            S[k, i] = _score(effs[t], D[k], shrink)[0]
            own_S[k, i] = _score(own_eff, D[k], shrink)[0] if own_eff else np.nan
    if contrast > 0 and len(clusters) > 1:
        # a term that fits another cluster better is a worse name for this one
        Sf = np.nan_to_num(S, nan=-np.inf)
        other_best = np.array([np.max(np.delete(Sf, k, axis=0), axis=0)
                               for k in range(len(clusters))])
        S = S - contrast * np.clip(other_best - S, 0, None)
    if rarity > 0 and "cellconsensus" in sources:
        # a cell type that published marker lists rarely report is an unlikely name
        S = S - rarity * _rarity(tlist, common)[None, :]
    tindex = {t: i for i, t in enumerate(tlist)}

    def label(t):
        return (names or {}).get(t) or cl.label[t]

    sizes = np.bincount(codes, minlength=len(clusters))
    var_names = np.asarray(ad.var_names)
    rows, ev_rows, top1 = [], [], {}
    picks, firsts = [], []
    for k in range(len(clusters)):
        order = [tlist[i] for i in np.argsort(-np.nan_to_num(S[k], nan=-np.inf), kind="stable")]
        # a confident parent beats a shaky child: move up while the term's own markers do
        # not support it but an ancestor among the candidates is supported
        chosen = []
        first = next((t for t in order if _supported(effs[t], D[k])), None)
        for t in order:
            # at least three, so that the common-parent rule sees the same runner-ups
            # whatever n_top is (the top-1 name must not depend on it)
            if len(chosen) >= max(n_top, 3):
                break
            if not _supported(effs[t], D[k]):
                continue  # no marker of the term is up in this cluster: not a suggestion
            cur, anchor = t, None
            while True:
                i = tindex[cur]
                weak_own = not np.isnan(own_S[k, i]) and own_S[k, i] < min_own
                if not weak_own and anchor is None:
                    anchor = S[k, i]
                # an ancestor nearly as well supported (as the first term on the way up
                # with support of its own, so the steps do not add up) is the safer name
                floor = anchor - margin if not weak_own else min_score
                ups = [a for a in cl.ancestors(cur, 3) if a in tindex
                       and S[k, tindex[a]] >= max(floor, min_score)
                       and not _specific(effs[cur], effs[a], D[k], shrink, keep_specific)]
                if not ups:
                    break
                cur = max(ups, key=lambda a: (S[k, tindex[a]], a))
            if cur not in chosen and _supported(effs[cur], D[k]):
                chosen.append(cur)
        if tie > 0 and chosen:
            chosen = _common_parent(chosen, S[k], D[k], tindex, effs, cl, tie, tie_steps,
                                    min_score, S[k, tindex[first]])
        picks.append(chosen)
        firsts.append(first)
    if distinct:
        picks = _distinct(picks, firsts)
    for k, c in enumerate(clusters):
        chosen = picks[k][:n_top]
        for r, t in enumerate(chosen, start=1):
            i = tindex[t]
            support = []
            for (j, sign), (w, srcs, step) in effs[t].items():
                dj = float(D[k, j])
                if (sign > 0 and dj > min_evidence) or (sign < 0 and dj <= 0):
                    support.append((w * abs(dj) if sign > 0 else w * 0.5, j, sign, w, srcs, step))
            support.sort(key=lambda x: -x[0])
            for _, j, sign, w, srcs, step in support[:n_evidence]:
                via = "" if step == 0 else f" (via ancestor, {step} is_a step{'s' * (step > 1)})"
                ev_rows.append({
                    "cluster": c, "rank": r, "term_id": t, "gene": str(var_names[j]),
                    "marker": "positive" if sign > 0 else "negative (absent)",
                    "effect_size": float(D[k, j]), "log_fold_change": float(eff_stats["lfc"][k, j]),
                    "pct_in": float(eff_stats["pct_in"][k, j]),
                    "pct_out": float(eff_stats["pct_out"][k, j]), "weight": float(w),
                    "source": "; ".join(sorted({s for s, _ in srcs})),
                    "statement": " | ".join(dict.fromkeys(x for _, x in srcs))[:300] + via,
                })
            rows.append({
                "cluster": c, "rank": r, "term_id": t, "name": label(t),
                "score": float(S[k, i]), "own_score": float(own_S[k, i]),
                "n_support": int(sum(1 for x in support if x[2] > 0 and D[k, x[1]] > 0.5)),
                "supporting_genes": ", ".join(str(var_names[x[1]]) for x in support[:n_evidence]
                                              if x[2] > 0),
                "n_cells": int(sizes[k]),
            })
        best = rows[-len(chosen)] if chosen else None
        has_support = (best is not None and best["score"] >= min_score and best["n_support"] > 0)
        top1[c] = best["name"] if has_support else UNASSIGNED

    ranking = pd.DataFrame(rows)
    evidence = pd.DataFrame(ev_rows, columns=[
        "cluster", "rank", "term_id", "gene", "marker", "effect_size", "log_fold_change",
        "pct_in", "pct_out", "weight", "source", "statement"])
    cats = list(dict.fromkeys(top1[c] for c in clusters))
    labels = pd.Categorical([top1[c] for c in np.asarray(clusters)[codes]], categories=cats)
    result = {
        "ranking": ranking,
        "evidence": evidence,
        "assigned": pd.Series(top1, name="name").rename_axis("cluster").reset_index(),
        "scores": pd.DataFrame(S, index=clusters, columns=tlist),
        "params": {
            "method": "markers", "key": key, "sources": list(sources), "species": species,
            "n_candidates": int(len(tlist)), "n_top": int(n_top), "min_score": float(min_score),
            "min_own": float(min_own), "decay": float(decay), "shrink": float(shrink),
            "margin": float(margin), "contrast": float(contrast), "tie": float(tie),
            "keep_specific": keep_specific, "rarity": float(rarity), "common": int(common),
            "distinct": bool(distinct),
            "lineages": [cl.label[t] for t in lineages_found], "layer": layer,
        },
    }
    result["params"] = {k: v for k, v in result["params"].items() if v is not None}
    return labels, result


def _resolve_terms(candidates, within):
    """Candidate CL ids (and display names) from ``candidates`` / ``within``."""
    from ..knowledge._cell_markers import TOO_GENERAL, cell_ontology
    from ._candidates import ontology_candidates

    if candidates is None:
        if within is None:
            ids = [t for t in cell_ontology().label if t not in TOO_GENERAL]
            return ids, None, True
        return ontology_candidates(within)["term_id"].tolist(), None, False
    if isinstance(candidates, str):
        raise TypeError(
            "`candidates` is a list of names or CL ids; to pick Cell Ontology terms by a "
            "preset, id or label, use `within=`."
        )
    from ..knowledge import match_cell_types

    cl = cell_ontology()
    candidates = [str(c) for c in candidates]
    by_id = [c for c in candidates if c.upper() in cl.label]
    # names: label / synonym lookup after rewriting in the ontology's style, the language
    # model as the bridge for the rest (its choice is logged, so the user can check it)
    found = match_cell_types([c for c in candidates if c not in by_id], n_top=1)
    bridged = found[found["route"] == "language model"]
    if len(bridged):
        logg.warning(
            "candidates matched to Cell Ontology terms by the language model (check them, or "
            "pass CL ids): " + "; ".join(
                f"{r.name!r} -> {r.term_name} ({r.term_id}, cosine {r.score:.2f})"
                for r in bridged.itertuples()
            )
        )
    term_of = dict(zip(found["name"], found["term_id"], strict=True))
    ids, names = [], {}
    for c in candidates:
        t = c.upper() if c in by_id else term_of.get(c, "")
        if not t or t in ids:
            continue
        ids.append(t)
        if not c.upper().startswith("CL:"):
            names[t] = c
    if len(ids) < 1:
        raise ValueError("No candidate is a Cell Ontology id, label or synonym.")
    return ids, names, False


@inject_docs()
def annotate_clusters(
    adata,
    key: str = Key.CLUSTER,
    candidates: Sequence[str] | Mapping[str, str] | None = None,
    *,
    within: str | Sequence[str] | None = None,
    mod: str | None = None,
    method: str | None = None,
    sources: Sequence[str] | None = None,
    species: str | None = None,
    knowledge=None,
    n_top: int = 3,
    min_score: float = 0.25,
    layer: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
    **similarity_kwargs,
):
    """Name clusters with Cell Ontology terms, from the expression of their marker genes.

    Every candidate term is scored for every cluster from explicit knowledge, and each
    suggestion comes with the evidence a biologist can check: the marker genes, how strongly
    the cluster expresses them, and the statement that links each gene to the term.

    1. **Markers** of each term (``sources``): those stated in the term's Cell Ontology name,
       synonyms or definition ("CD14-positive monocyte", "expresses CD19", "is negative for
       CD3", "secretes insulin", "ghrelin secreting"; antigen names resolved through the
       human alias table, e.g. CD16 -> FCGR3A); if ``cellconsensus`` is installed (``pip install
       "scllm-dsc[markers]"``), its consensus marker lists; without it, genes whose NCBI
       summary names the term (weighted by how many terms it names; a mention is weaker
       evidence than a curated marker, so by default these links are used only when the
       database is absent). Mouse genes are mapped to human symbols through the ortholog
       table (else by upper case).
    2. **Effects**: per cluster and gene, the difference of mean log-normalised expression
       from all other cells over the pooled standard deviation.
    3. **Score** of a term: the weighted mean effect of its positive markers (clipped at
       [-1, 3], shrunk towards 0 for terms with few markers) minus that of its negative
       markers, with the markers of its is_a ancestors (up to two steps, half weight per step)
       propagated down to it. With the marker database, a term it merged from fewer than 10
       published marker lists loses 0.5 per decade below that (``0.5 * log10(10 / (1 + n))``
       for ``n`` lists): a cell type that studies rarely report ("double negative T
       regulatory cell", "liver dendritic cell") is an unlikely name for a cluster that
       common types fit about as well. Terms the Cell Ontology restricts to another species
       (", mouse" in human data) are not candidates.
    4. **Hierarchy**: a term whose own markers do not support the cluster (own score below
       ``min_score``), or whose ancestor among the candidates scores nearly as well, gives
       way to that ancestor, so a confident parent ("T cell") is preferred over a shaky
       child, unless the markers the term has beyond that ancestor's are clearly up on their
       own (score at least 0.5: the granzymes of a cytotoxic T cell). When the two best
       suggestions are not on one is_a path and nearly tie (within 0.2 of the best score),
       the cluster is named by their nearest common ancestor ("monocyte" when "classical"
       and "non-classical monocyte" cannot be told apart), with both below it. Clusters
       that these two rules give one name, but whose own best terms differ, keep those
       terms (two CD8 T-cell clusters stay "naive" and "cytotoxic" rather than both
       "CD8-positive, alpha-beta T cell"): a name tells clusters apart where the data do.
    5. A cluster whose best term scores below ``min_score``, or has no marker with an
       effect above 0.5, is named ``"unassigned"``.

    Parameters
    ----------
    {adata}
    key
        Column of ``adata.obs`` with the cluster labels.
    candidates
        Your own candidates: a list of Cell Ontology ids or cell type names. A name is
        rewritten in the ontology's style (``"CD14+ Monocytes"`` -> ``"CD14-positive
        monocyte"``) and looked up among labels and synonyms; one that is still not found is
        matched to its closest term by the language model, helped by the markers the name
        states (logged as a warning, so you can check it).
        ``None``: Cell Ontology terms (see ``within``).
    within
        Subset of the Cell Ontology to draw candidates from: a preset (``"immune"``/
        ``"blood"``, ``"pancreas"``, ``"brain"``), a CL id or label (the term and its
        descendants), or a list of these. ``None``: all terms, narrowed from the data by a
        first coarse pass (the broad lineages, e.g. hematopoietic, epithelial or neural
        cell, that win at least one cluster).
    {mod}
    method
        ``"markers"`` (this method) or ``"similarity"`` (the earlier text-embedding ranking;
        ``None``: ``"similarity"`` when ``candidates`` is a dict of descriptions or one of its
        options below is given, else ``"markers"``;
        needs :func:`~scllm_dsc.tl.embed_genes` first; its options go in
        ``similarity_kwargs``: ``n_markers``, ``use_markers``, ``marker_weight``,
        ``n_background``, ``relative``, ``de_method``, ``gene_key``, ``model``, ``device``,
        ``random_state``).
    sources
        Marker sources among ``"CL"``, ``"gene text"`` and ``"cellconsensus"``; ``None``:
        ``["CL", "cellconsensus"]`` when ``cellconsensus`` is installed, else
        ``["CL", "gene text"]``.
    species
        ``"human"`` or ``"mouse"``; ``None`` guesses from the gene names.
    knowledge
        Gene text table (or folder) for the alias table, gene full names and summaries, as
        in :func:`~scllm_dsc.knowledge.get_knowledge`; ``None`` uses the default folder.
    n_top
        Suggestions kept per cluster.
    min_score
        Least score for a name (below: ``"unassigned"``) and for a term's own markers to
        count as support.
    {layer}
    key_added
        Defaults to ``f"{{key}}_annotation"``.
    {copy}

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``, with

    - ``obs[key_added]``: each cell's cluster name (categorical; ``"unassigned"`` possible);
    - ``uns[key_added]``: ``"ranking"`` (per cluster and rank: ``term_id``, ``name``,
      ``score``, ``own_score``, ``n_support``, ``supporting_genes``, ``n_cells``),
      ``"evidence"`` (per cluster, rank and gene: ``marker``, ``effect_size``,
      ``log_fold_change``, ``pct_in``, ``pct_out``, ``weight``, ``source``, ``statement``),
      ``"assigned"`` (the name given to each cluster), ``"scores"`` (clusters x candidate
      CL ids, each term's final score; ``method="markers"``) and ``"params"``.
    """
    from .._utils import resolve_adata

    ad = resolve_adata(adata, mod)
    if key not in ad.obs:
        raise KeyError(
            f"adata.obs[{key!r}] not found: run `sd.tl.cluster` first, or pass `key=` naming "
            "an obs column of cluster labels."
        )
    if n_top < 1:
        raise ValueError("`n_top` must be positive.")
    key_added = key_added or f"{key}_annotation"
    if method is None:
        # free-text descriptions and the similarity options only make sense for the
        # text-similarity ranking (earlier calls keep working)
        method = "similarity" if similarity_kwargs or isinstance(candidates, Mapping) \
            else "markers"
    if method == "similarity":
        opts = {"n_markers": 50, "use_markers": True, "marker_weight": 0.5,
                "n_background": 200, "relative": True, "de_method": "wilcoxon",
                "gene_key": Key.GENE_TEXT, "model": None, "device": None, "random_state": 0}
        bad = set(similarity_kwargs) - set(opts)
        if bad:
            raise TypeError(f"Unexpected arguments {sorted(bad)}.")
        opts.update(similarity_kwargs)
        if candidates is not None and within is not None:
            raise ValueError(
                "Pass either `candidates` (your own list) or `within` (ontology subset)."
            )
        if opts["n_markers"] < 1:
            raise ValueError("`n_top` and `n_markers` must be positive.")
        if not 0.0 <= opts["marker_weight"] <= 1.0:
            raise ValueError("`marker_weight` must lie in [0, 1].")
        labels, result = _similarity_annotation(
            ad, key, candidates, within=within, n_top=n_top, layer=layer, **opts
        )
    elif method == "markers":
        if similarity_kwargs:
            raise TypeError(
                f"Unexpected arguments {sorted(similarity_kwargs)} (they belong to "
                "method='similarity')."
            )
        if candidates is not None and within is not None:
            raise ValueError("Pass either `candidates` (your own list) or `within`.")
        terms, names, narrow = _resolve_terms(candidates, within)
        labels, result = marker_annotation(
            ad, key, terms=terms, names=names, sources=sources, species=species,
            knowledge=knowledge, layer=layer, n_top=n_top, min_score=min_score,
            min_own=min_score, narrow=narrow,
        )
        result["params"]["within"] = (
            within if within is None or isinstance(within, str) else list(within)
        )
        result["params"] = {k: v for k, v in result["params"].items() if v is not None}
    else:
        raise ValueError(f"`method` must be 'markers' or 'similarity', not {method!r}.")

    if copy:
        adata = adata.copy()
        ad = resolve_adata(adata, mod)
    ad.obs[key_added] = pd.Categorical(labels, categories=labels.categories)
    ad.uns[key_added] = result
    logg.info(
        f"added\n    obs[{key_added!r}], the name of each cell's cluster\n"
        f"    uns[{key_added!r}], ranking and evidence per cluster"
    )
    return adata if copy else None
