"""``sd.pl.alignment``: agreement of the semantic and structural views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import Key
from .._docs import inject_docs
from ..tl._alignment_scores import alignment_scores
from ._utils import check_axs, finish, new_grid, palette_for

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MATCHED_COLOR = "#1f77b4"
RANDOM_COLOR = "#b0b0b0"


@inject_docs()
def alignment(
    adata: AnnData,
    key: str = Key.CLUSTER,
    *,
    groupby: str | None = None,
    k: int = 10,
    max_cells: int | None = 5000,
    random_state: int = 0,
    bins: int = 50,
    axs: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool | None = None,
) -> Figure | dict[str, Axes] | None:
    """Plot how well the semantic and structural views of each cell agree.

    Three panels, computed by :func:`scllm_dsc.pl.alignment_scores`:

    1. **Cross-view cosine**: histograms of the cosine similarity between the two views of
       the same cell (matched) and of random cell pairs. Good alignment separates them.
    2. **Alignment per cluster**: mean matched cosine per group (bars in the group colours),
       with the mean over random pairs as a dashed line.
    3. **Cross-view retrieval**: how often a cell's nearest neighbour in the other view is
       itself (top-1), is among its ``k`` nearest (top-k), or belongs to its own group; black
       ticks mark the chance levels.

    Parameters
    ----------
    {adata}
    key
        ``key_added`` of :func:`scllm_dsc.tl.cluster`.
    groupby
        Column of ``adata.obs`` for panels 2 and 3. Default: the clusters ``adata.obs[key]``.
    k
        Neighbourhood size of the top-k retrieval rate.
    max_cells
        Subsample to this many cells for the scores (``None``: all cells).
    {random_state}
    bins
        Number of histogram bins.
    axs
        Three matplotlib axes to draw into instead of a new figure.
    show
        Show the plot (default :attr:`scanpy.settings.autoshow`).
    save
        Save the figure like :mod:`scanpy.pl` does: ``True`` or a file-name suffix such as
        ``"_run1.pdf"``, written under :attr:`scanpy.settings.figdir`.
    return_fig
        Return the :class:`~matplotlib.figure.Figure`.

    Returns
    -------
    The figure if ``return_fig``; a dict of the three axes (``"cosine"``, ``"groups"``,
    ``"retrieval"``) if ``show=False``; else ``None``.
    """
    scores = alignment_scores(
        adata, key, groupby=groupby, k=k, max_cells=max_cells, random_state=random_state
    )
    summary, per_group = scores["summary"], scores["per_group"]
    gb = scores["groupby"]

    if axs is None:
        fig, axes = new_grid(3, 3, (4.2, 3.6), wspace=0.4)
    else:
        fig, axes = check_axs(axs, 3)
    ax_cos, ax_grp, ax_ret = axes

    # 1. matched vs random cosine
    matched, random = scores["matched_cosine"], scores["random_cosine"]
    lo = min(matched.min(), random.min(), 0.0)
    edges = np.linspace(lo, 1.0, bins + 1)
    ax_cos.hist(random, bins=edges, color=RANDOM_COLOR, alpha=0.8, label="random pairs")
    ax_cos.hist(matched, bins=edges, color=MATCHED_COLOR, alpha=0.6, label="matched cells")
    ax_cos.set_xlabel("cosine similarity (semantic vs structural)")
    ax_cos.set_ylabel("cells")
    ax_cos.set_title("Cross-view cosine")
    ax_cos.legend(frameon=False, fontsize="small")
    ax_cos.grid(False)

    # 2. per-group mean matched cosine
    names = list(per_group.index)
    colors = palette_for(adata, gb, names)
    x = np.arange(len(names))
    ax_grp.bar(x, per_group["matched_cosine"].fillna(0).to_numpy(), color=colors)
    ax_grp.axhline(summary["random_cosine"], ls="--", color="k", lw=1, label="random pairs")
    ax_grp.set_xticks(x)
    ax_grp.set_xticklabels(names, rotation=90 if len(names) > 8 else 0)
    ax_grp.set_xlabel(gb)
    ax_grp.set_ylabel("mean matched cosine")
    ax_grp.set_title("Alignment per cluster" if gb == key else f"Alignment per {gb}")
    ax_grp.legend(frameon=False, fontsize="small")
    ax_grp.grid(False)

    # 3. retrieval rates with chance levels
    labels = ["top-1", f"top-{int(summary['k'])}", "same cluster" if gb == key else "same group"]
    rates = [summary["recall_at_1"], summary["recall_at_k"], summary["same_group"]]
    chance = [
        summary["chance_recall_at_1"],
        summary["chance_recall_at_k"],
        summary["chance_same_group"],
    ]
    xr = np.arange(3)
    ax_ret.bar(xr, rates, color=MATCHED_COLOR, width=0.6)
    ax_ret.hlines(chance, xr - 0.3, xr + 0.3, colors="k", lw=2, label="chance")
    ax_ret.set_xticks(xr)
    ax_ret.set_xticklabels(labels)
    ax_ret.set_ylim(0, 1.05)
    ax_ret.set_ylabel("fraction of cells")
    ax_ret.set_title("Cross-view retrieval")
    ax_ret.legend(frameon=False, fontsize="small", loc="upper left")
    ax_ret.grid(False)

    return finish(
        fig,
        {"cosine": ax_cos, "groups": ax_grp, "retrieval": ax_ret},
        "alignment",
        show=show,
        save=save,
        return_fig=return_fig,
    )
