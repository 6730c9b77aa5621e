"""``sd.pl.cluster_genes``: knowledge genes next to differentially expressed genes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import Key
from .._docs import inject_docs
from .._utils import l2_normalize
from ._utils import (
    _cluster_hint,
    as_categorical,
    finish,
    new_grid,
    palette_for,
    require,
    require_obs_column,
)

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.figure import Figure

_EMBED_HINT = "run `sd.tl.embed_genes(adata)` first"


def _knowledge_genes(adata, clusters: pd.Categorical, n_genes: int, center: bool):
    G = np.asarray(adata.varm[Key.GENE_TEXT], dtype=np.float64)
    C = adata.obsm[Key.X_GENE_TEXT]
    C = np.asarray(C.toarray() if hasattr(C, "toarray") else C, dtype=np.float64)
    if G.shape[1] != C.shape[1]:
        raise ValueError(
            f"`adata.varm[{Key.GENE_TEXT!r}]` has {G.shape[1]} dimensions but "
            f"`adata.obsm[{Key.X_GENE_TEXT!r}]` {C.shape[1]}: re-run `sd.tl.embed_genes(adata)`."
        )
    if Key.GENE_TEXT_FOUND in adata.var.columns:
        found = adata.var[Key.GENE_TEXT_FOUND].to_numpy(dtype=bool)
    else:
        found = np.linalg.norm(G, axis=1) > 0
    if not found.any():
        raise ValueError("No gene has a knowledge embedding: check `sd.tl.embed_genes`'s output.")
    genes = adata.var_names[found]
    G = G[found]
    codes = clusters.codes
    cats = clusters.categories
    centroids = np.stack(
        [C[codes == i].mean(axis=0) if (codes == i).any() else np.zeros(C.shape[1])
         for i in range(len(cats))]
    )
    if center:
        # gene-text vectors share a strong common direction; without centring every cluster
        # would be closest to the same generic genes
        G = G - G.mean(axis=0)
        centroids = centroids - C.mean(axis=0)
    sims = l2_normalize(centroids) @ l2_normalize(G).T  # clusters x found genes
    n = min(n_genes, G.shape[0])
    top = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    return {
        str(c): (list(genes[top[i]]), list(sims[i, top[i]])) for i, c in enumerate(cats)
    }


def _de_genes(adata, key: str, n_genes: int, layer: str | None, method: str):
    import anndata as ad
    import scanpy as sc

    from .._utils import get_matrix, looks_like_counts

    rgg = adata.uns.get("rank_genes_groups")
    reuse = (
        layer is None
        and isinstance(rgg, dict)
        and rgg.get("params", {}).get("groupby") == key
        and "names" in rgg
    )
    if reuse:
        names = pd.DataFrame(rgg["names"])
        scores = pd.DataFrame(rgg["scores"]) if "scores" in rgg else None
    else:
        X = get_matrix(adata, layer)
        clusters = adata.obs[key]
        sizes = clusters.value_counts()
        tmp = ad.AnnData(
            X=X.copy(),
            obs=pd.DataFrame(
                {key: as_categorical(clusters.to_numpy()).values}, index=adata.obs_names
            ),
            var=pd.DataFrame(index=adata.var_names),
        )
        if looks_like_counts(tmp.X):
            sc.pp.normalize_total(tmp, target_sum=1e4)
            sc.pp.log1p(tmp)
        groups = [str(g) for g in sizes.index[sizes >= 2]]
        if len(groups) < 2:
            return {}
        sc.tl.rank_genes_groups(
            tmp, key, groups=groups, method=method, n_genes=n_genes, use_raw=False
        )
        names = pd.DataFrame(tmp.uns["rank_genes_groups"]["names"])
        scores = pd.DataFrame(tmp.uns["rank_genes_groups"]["scores"])
    out = {}
    for g in names.columns:
        genes = list(names[g].astype(str)[:n_genes])
        if scores is not None:
            values = list(scores[g].astype(float)[:n_genes])
        else:
            values = [np.nan] * len(genes)
        out[str(g)] = (genes, values)
    return out


@inject_docs()
def cluster_gene_table(
    adata: AnnData,
    key: str = Key.CLUSTER,
    *,
    n_genes: int = 10,
    center: bool = True,
    layer: str | None = None,
    method: str = "t-test",
) -> pd.DataFrame:
    """Per cluster, the knowledge genes closest to its semantic centroid and its top DE genes.

    The semantic centroid of a cluster is the mean of the cell embeddings
    ``adata.obsm["X_gene_text"]`` over its cells, in the space of the gene-text vectors
    ``adata.varm["gene_text"]`` (both written by :func:`scllm_dsc.tl.embed_genes`). Genes with
    a text (``adata.var["gene_text_found"]``) are ranked by cosine similarity to it. With
    ``center=True`` both sides are centred first (the mean gene vector is subtracted from the
    gene vectors, the mean cell embedding from the centroids): gene-text vectors of small
    encoders share one strong common direction, and without centring every cluster would
    point to the same generic genes.

    Differentially expressed genes come from :func:`scanpy.tl.rank_genes_groups`:
    ``adata.uns["rank_genes_groups"]`` is reused when it was computed with
    ``groupby=key``; otherwise it runs on a log-normalised copy (counts are normalised to
    10,000 per cell and log1p-transformed; data that is not counts is used as it is).
    ``adata`` is not modified.

    Parameters
    ----------
    {adata}
    key
        Column of ``adata.obs`` with the clusters (``key_added`` of
        :func:`scllm_dsc.tl.cluster`; any categorical column works).
    n_genes
        Genes per cluster and column.
    center
        Centre gene vectors and centroids before the cosine similarity (see above).
    layer
        Layer with the expression for the DE test (``None``: ``adata.X``).
    method
        Test of :func:`scanpy.tl.rank_genes_groups`.

    Returns
    -------
    A long table, one row per cluster and rank: ``cluster``, ``rank`` (1-based),
    ``knowledge_gene``, ``knowledge_cosine``, ``de_gene``, ``de_score``.
    """
    require_obs_column(adata, key, _cluster_hint(key))
    require(adata, "varm", Key.GENE_TEXT, _EMBED_HINT)
    require(adata, "obsm", Key.X_GENE_TEXT, _EMBED_HINT)
    if n_genes < 1:
        raise ValueError(f"`n_genes` must be at least 1, got {n_genes}.")
    clusters = pd.Categorical(as_categorical(adata.obs[key].to_numpy()))
    know = _knowledge_genes(adata, clusters, n_genes, center)
    de = _de_genes(adata, key, n_genes, layer, method)
    rows = []
    for c in clusters.categories:
        c = str(c)
        kg, ks = know.get(c, ([], []))
        dg, ds = de.get(c, ([], []))
        for r in range(max(len(kg), len(dg))):
            rows.append(
                {
                    "cluster": c,
                    "rank": r + 1,
                    "knowledge_gene": kg[r] if r < len(kg) else None,
                    "knowledge_cosine": ks[r] if r < len(ks) else np.nan,
                    "de_gene": dg[r] if r < len(dg) else None,
                    "de_score": ds[r] if r < len(ds) else np.nan,
                }
            )
    table = pd.DataFrame(rows)
    order = [str(c) for c in clusters.categories]
    table["cluster"] = pd.Categorical(table["cluster"], categories=order)
    return table


@inject_docs()
def cluster_genes(
    adata: AnnData,
    key: str = Key.CLUSTER,
    *,
    n_genes: int = 10,
    center: bool = True,
    layer: str | None = None,
    method: str = "t-test",
    ncols: int = 4,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool | None = None,
) -> Figure | pd.DataFrame:
    """Show, per cluster, its knowledge genes next to its differentially expressed genes.

    One panel per cluster with two columns of gene names: on the left the genes whose
    knowledge (text) embeddings are closest to the cluster's semantic centroid, with their
    cosine similarity; on the right the cluster's top differentially expressed genes with their
    test score. See :func:`scllm_dsc.pl.cluster_gene_table` for how both are computed.
    Agreement between the columns means the knowledge view describes what sets the cluster
    apart.

    Parameters
    ----------
    {adata}
    key
        Column of ``adata.obs`` with the clusters (``key_added`` of
        :func:`scllm_dsc.tl.cluster`).
    n_genes
        Genes per cluster and column.
    center
        Centre gene vectors and centroids before the cosine similarity.
    layer
        Layer with the expression for the DE test (``None``: ``adata.X``).
    method
        Test of :func:`scanpy.tl.rank_genes_groups`.
    ncols
        Panels per row.
    show
        Show the plot (default :attr:`scanpy.settings.autoshow`).
    save
        Save the figure like :mod:`scanpy.pl` does (``True`` or a file-name suffix).
    return_fig
        Return the :class:`~matplotlib.figure.Figure` instead of the table.

    Returns
    -------
    The figure if ``return_fig``, else the table of :func:`scllm_dsc.pl.cluster_gene_table`.
    """
    table = cluster_gene_table(
        adata, key, n_genes=n_genes, center=center, layer=layer, method=method
    )
    cats = list(table["cluster"].cat.categories)
    colors = palette_for(adata, key, cats)
    sizes = adata.obs[key].astype(str).value_counts()
    def short(name, width=11):
        name = str(name)
        return name if len(name) <= width else name[: width - 1] + "\u2026"

    fig, axes = new_grid(
        len(cats), ncols, (3.6, 0.6 + 0.24 * (n_genes + 1)), wspace=0.1, hspace=0.3
    )
    for ax, c, col in zip(axes, cats, colors, strict=True):
        sub = table[table["cluster"] == c]
        ax.set_axis_off()
        ax.set_xlim(0, 1)
        ax.set_ylim(n_genes + 0.6, -0.9)
        ax.set_title(f"{key} {c} ({int(sizes.get(c, 0))} cells)", color=col, fontweight="bold")
        ax.text(0.0, 0, "knowledge", fontweight="bold", fontsize="small", va="center")
        ax.text(0.52, 0, "DE", fontweight="bold", fontsize="small", va="center")
        for _, row in sub.iterrows():
            y = row["rank"]
            kg = de = ""
            if row["knowledge_gene"] is not None:
                kg = f"{short(row['knowledge_gene']):<11} {row['knowledge_cosine']:.2f}"
            if row["de_gene"] is not None:
                de = f"{short(row['de_gene']):<11} {row['de_score']:.3g}"
            ax.text(0.0, y, kg, fontsize="x-small", va="center", family="monospace")
            ax.text(0.52, y, de, fontsize="x-small", va="center", family="monospace")
    res = finish(fig, axes, "cluster_genes", show=show, save=save, return_fig=return_fig)
    return res if return_fig else table
