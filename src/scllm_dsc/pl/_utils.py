"""Helpers shared by the plotting functions: key names, key checks, palettes, show/save."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._checks import (  # noqa: F401 (re-exported for the plotting modules)
    MissingKeyError,
    _cluster_hint,
    as_categorical,
    require,
    require_obs_column,
    semantic_key,
    structural_key,
    umap_key,
)

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.figure import Figure


def palette_for(adata: AnnData, key: str, categories: Sequence) -> list[str]:
    """Colours of the categories of ``adata.obs[key]``, the way :mod:`scanpy.pl` picks them.

    Uses ``adata.uns[f"{key}_colors"]`` when present and long enough, otherwise scanpy's
    default (the matplotlib colour cycle set by :func:`scanpy.set_figure_params`, then
    scanpy's 20, 28 and 102 colour palettes). Never writes to ``adata``.
    """
    from matplotlib import rcParams
    from scanpy.plotting import palettes

    n = len(categories)
    stored = adata.uns.get(f"{key}_colors") if key is not None else None
    if stored is not None and len(stored) >= n:
        return [str(c) for c in list(stored)[:n]]
    cycle = rcParams["axes.prop_cycle"].by_key().get("color", [])
    if len(cycle) >= n:
        return list(cycle[:n])
    if n <= 20:
        return list(palettes.default_20[:n])
    if n <= 28:
        return list(palettes.default_28[:n])
    if n <= len(palettes.default_102):
        return list(palettes.default_102[:n])
    return ["grey"] * n


def finish(
    fig: Figure,
    axes,
    writekey: str,
    *,
    show: bool | None,
    save: bool | str | None,
    return_fig: bool | None,
):
    """Show and/or save like :mod:`scanpy.pl`, and return the figure, the axes or ``None``."""
    from scanpy.plotting._utils import savefig_or_show

    if return_fig:
        if save:
            savefig_or_show(writekey, show=False, save=save)
        return fig
    savefig_or_show(writekey, show=show, save=save)
    from scanpy import settings

    show = settings.autoshow if show is None else show
    if not show:
        return axes
    return None


def new_grid(n_panels: int, ncols: int, panel_size: tuple[float, float], wspace=0.35, hspace=0.5):
    """A figure with ``n_panels`` axes on a grid of ``ncols`` columns; unused cells removed."""
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    fig, axs = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
        squeeze=False,
        gridspec_kw={"wspace": wspace, "hspace": hspace},
    )
    axs = axs.ravel()
    for ax in axs[n_panels:]:
        fig.delaxes(ax)
    return fig, list(axs[:n_panels])


def check_axs(axs, n: int):
    """Validate user-supplied axes; return ``(fig, list_of_axes)``."""
    axs = list(np.ravel(axs))
    if len(axs) != n:
        raise ValueError(f"`axs` must hold {n} matplotlib Axes, got {len(axs)}.")
    return axs[0].figure, axs
