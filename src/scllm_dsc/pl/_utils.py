"""Helpers shared by the plotting functions: key names, key checks, palettes, show/save."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import Key

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.figure import Figure


class MissingKeyError(KeyError):
    """A key a plot needs is missing from the AnnData object.

    The message says which ``sd.tl`` call writes it.
    """

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


def semantic_key(key: str = Key.CLUSTER) -> str:
    """``obsm`` key of the projected, L2-normalised semantic view written by ``sd.tl.cluster``."""
    return Key.semantic(key)


def structural_key(key: str = Key.CLUSTER) -> str:
    """``obsm`` key of the projected, L2-normalised structural view written by ``sd.tl.cluster``."""
    return Key.structural(key)


def umap_key(rep: str) -> str:
    """``obsm`` key under which :func:`scllm_dsc.pl.views` caches the UMAP of ``obsm[rep]``."""
    return f"X_umap_{rep[2:] if rep.startswith('X_') else rep}"


def _cluster_hint(key: str) -> str:
    return f"run `sd.tl.cluster(adata, key_added={key!r})` first"


def require(adata: AnnData, attr: str, name: str, hint: str) -> None:
    """Raise :class:`MissingKeyError` if ``getattr(adata, attr)[name]`` is missing."""
    container = getattr(adata, attr)
    present = name in container.columns if attr in ("obs", "var") else name in container
    if not present:
        raise MissingKeyError(f"`adata.{attr}[{name!r}]` not found: {hint}.")


def require_obs_column(adata: AnnData, name: str, hint: str | None = None) -> None:
    if name not in adata.obs.columns:
        hint = hint or (
            f"pass the name of a column of `adata.obs` (available: {list(adata.obs.columns)[:10]})"
        )
        raise MissingKeyError(f"`adata.obs[{name!r}]` not found: {hint}.")


def as_categorical(values):
    """A categorical :class:`pandas.Series` (RangeIndex) of ``values``; non-categoricals as str."""
    import pandas as pd

    s = pd.Series(values)
    if not isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(str).astype("category")
    return s.astype("category")


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
