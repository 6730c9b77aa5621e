"""Plots of the cluster names of :func:`scllm_dsc.tl.annotate_clusters` and their evidence."""

from __future__ import annotations

import numpy as np

from .._constants import Key


def _score_heatmap(
    adata,
    key: str = Key.CLUSTER,
    n_top: int = 3,
    *,
    key_added: str | None = None,
    cmap: str = "viridis",
    annotate: bool = True,
    ax=None,
    show: bool | None = None,
    save: str | bool | None = None,
    return_fig: bool = False,
):
    """Heatmap of clusters x their top suggested names (``method="similarity"`` results).

    Columns are the union of each cluster's ``n_top`` suggestions (in order of first
    appearance); the cluster's own top suggestions are outlined. Scores are those of
    :func:`scllm_dsc.tl.annotate_clusters` (standardised over candidates per cluster;
    suggestions, not annotations).

    Parameters
    ----------
    adata
        Annotated data matrix with ``uns[key_added]`` from ``sd.tl.annotate_clusters``.
    key
        The cluster key given to ``annotate_clusters``.
    n_top
        Suggestions per cluster to show.
    key_added
        ``key_added`` of ``annotate_clusters`` (default ``f"{key}_annotation"``).
    cmap
        Colour map of the scores.
    annotate
        Write the score into each cell of the heatmap.
    ax
        A matplotlib axes to draw into.
    show
        Show the plot; ``None`` follows scanpy's settings (shown unless ``ax`` is given or
        ``return_fig``).
    save
        Save the figure: a file name, or ``True`` for ``"annotation.pdf"``; written to
        ``scanpy.settings.figdir`` like ``sc.pl`` plots.
    return_fig
        Return the :class:`~matplotlib.figure.Figure`.

    Returns
    -------
    The figure when ``return_fig=True``, the axes when ``show=False``, else ``None``.
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    key_added = key_added or f"{key}_annotation"
    if key_added not in adata.uns or "scores" not in adata.uns[key_added]:  # pragma: no cover
        raise KeyError(
            f"adata.uns[{key_added!r}] not found: run `sd.tl.annotate_clusters(adata, "
            f"key={key!r})` first."
        )
    if n_top < 1:
        raise ValueError("`n_top` must be positive.")
    scores = adata.uns[key_added]["scores"]
    S = scores.to_numpy(dtype=float)
    clusters = [str(c) for c in scores.index]
    names = np.asarray(scores.columns, dtype=object)
    order = np.argsort(-S, axis=1, kind="stable")[:, : min(n_top, S.shape[1])]
    cols = list(dict.fromkeys(order.ravel().tolist()))
    M = S[:, cols]

    if ax is None:
        width = min(2.0 + 0.45 * len(cols), 24)
        height = min(1.5 + 0.4 * len(clusters), 24)
        fig, ax = plt.subplots(figsize=(width, height))
    else:
        fig = ax.figure
    im = ax.imshow(M, aspect="auto", cmap=cmap)
    ax.set_xticks(range(len(cols)), [str(n) for n in names[cols]], rotation=60, ha="right",
                  fontsize="small")
    ax.set_yticks(range(len(clusters)), clusters)
    ax.set_xlabel("suggested name")
    ax.set_ylabel(key)
    ax.set_title("cluster name suggestions (score)")
    pos = {c: j for j, c in enumerate(cols)}
    for i in range(len(clusters)):
        for r, c in enumerate(order[i]):
            j = pos[c]
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                       edgecolor="white" if r else "red", linewidth=1.5))
    if annotate and M.size <= 600:
        mid = np.nanmean(M)
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                ax.text(j, i, f"{M[i, j]:.1f}", ha="center", va="center", fontsize="x-small",
                        color="black" if M[i, j] > mid else "white")
    fig.colorbar(im, ax=ax, label="score", shrink=0.8)

    if save:
        from pathlib import Path

        fname = "annotation.pdf" if save is True else str(save)
        path = Path(fname)
        if not path.suffix:
            path = path.with_suffix("." + sc.settings.file_format_figs)
        if not path.is_absolute() and path.parent == Path("."):
            path = Path(sc.settings.figdir) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")  # dpi: rcParams["savefig.dpi"], as sc.pl
    if return_fig:
        return fig
    if show is None:
        show = sc.settings.autoshow
    if show:
        plt.show()
        return None
    return ax


def annotation(
    adata,
    key: str = Key.CLUSTER,
    n_genes: int = 4,
    *,
    mod: str | None = None,
    key_added: str | None = None,
    layer: str | None = None,
    cmap: str = "Reds",
    show: bool | None = None,
    save: str | bool | None = None,
    return_fig: bool = False,
    **kwargs,
):
    """Dot plot of each cluster's name and the marker genes that support it.

    Rows are clusters labelled ``"cluster: name"``; columns are, per cluster, the
    ``n_genes`` strongest supporting markers of its name (from ``uns[key_added]["evidence"]``,
    grouped under the name), shown as in :func:`scanpy.pl.dotplot` (dot size: fraction of
    cells expressing; colour: mean log-normalised expression, scaled per gene). Reads the
    AnnData only; nothing is written to it. For results of ``method="similarity"`` (no
    marker evidence) a heatmap of the suggestion scores is drawn instead.

    Parameters
    ----------
    adata
        AnnData (or MuData with ``mod``) with ``uns[key_added]`` from
        ``sd.tl.annotate_clusters``.
    key
        The cluster key given to ``annotate_clusters``.
    n_genes
        Supporting genes per cluster.
    mod
        Modality of a MuData.
    key_added
        ``key_added`` of ``annotate_clusters`` (default ``f"{key}_annotation"``).
    layer
        Layer with counts (or log-normalised values); ``None`` uses ``X``.
    cmap
        Colour map.
    show, save
        As in :func:`scanpy.pl.dotplot`.
    return_fig
        Return the :class:`scanpy.pl.DotPlot` object.
    **kwargs
        Passed to :func:`scanpy.pl.dotplot`.

    Returns
    -------
    The ``DotPlot`` when ``return_fig=True``, else what :func:`scanpy.pl.dotplot` returns.
    """
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    from .._utils import resolve_adata
    from ..tl._annotate import _log_normalised

    adata = resolve_adata(adata, mod)
    key_added = key_added or f"{key}_annotation"
    res = adata.uns.get(key_added)
    if res is None:
        raise KeyError(
            f"adata.uns[{key_added!r}] not found: run `sd.tl.annotate_clusters(adata, "
            f"key={key!r})` first."
        )
    if "evidence" not in res:
        return _score_heatmap(adata, key, key_added=key_added, show=show, save=save,
                              return_fig=return_fig)
    if n_genes < 1:
        raise ValueError("`n_genes` must be positive.")
    ev = res["evidence"]
    assigned = res["assigned"].set_index("cluster")["name"].astype(str)
    ev1 = ev[(ev["rank"] == 1) & (ev["marker"] == "positive")]
    groups: dict[str, list[str]] = {}
    for c in assigned.index:
        if assigned[c] == "unassigned":
            continue
        genes = ev1[ev1["cluster"].astype(str) == c]["gene"].tolist()[:n_genes]
        if genes:
            groups.setdefault(assigned[c], [])
            groups[assigned[c]] += [g for g in genes if g not in groups[assigned[c]]]
    if not groups:
        raise ValueError("No cluster has supporting marker genes to show (all unassigned).")
    genes = list(dict.fromkeys(g for gs in groups.values() for g in gs))
    idx = adata.var_names.get_indexer(genes)
    X = _log_normalised(adata, layer)[:, idx]  # library sizes from all genes
    labels = adata.obs[key].astype(str).map(lambda c: f"{c}: {assigned.get(c, '?')}")
    tmp = ad.AnnData(
        X=X, obs=pd.DataFrame({"cluster": pd.Categorical(labels.values)},
                              index=adata.obs_names),
        var=pd.DataFrame(index=genes),
    )
    kwargs.setdefault("standard_scale", "var")
    return sc.pl.dotplot(tmp, var_names=groups, groupby="cluster", cmap=cmap, show=show,
                         save=save, return_fig=return_fig, **kwargs)
