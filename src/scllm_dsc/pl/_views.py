"""``sd.pl.views``: UMAPs of the semantic, structural and fused embeddings side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._constants import Key
from .._docs import inject_docs
from ._utils import (
    MissingKeyError,
    _cluster_hint,
    check_axs,
    finish,
    new_grid,
    require,
    semantic_key,
    structural_key,
    umap_key,
)

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _umap_of(rep_matrix, obs_names, n_neighbors: int, random_state: int) -> np.ndarray:
    """UMAP of a representation, computed on a throw-away AnnData (the user's graph is kept)."""
    import anndata as ad
    import scanpy as sc

    X = np.asarray(rep_matrix.toarray() if hasattr(rep_matrix, "toarray") else rep_matrix)
    tmp = ad.AnnData(obs={"_": np.zeros(X.shape[0])}, obsm={"rep": X.astype(np.float32)})
    tmp.obs_names = obs_names
    sc.pp.neighbors(
        tmp, use_rep="rep", n_neighbors=min(n_neighbors, X.shape[0] - 1), random_state=random_state
    )
    sc.tl.umap(tmp, random_state=random_state)
    return np.asarray(tmp.obsm["X_umap"])


@inject_docs()
def views(
    adata: AnnData,
    key: str = Key.CLUSTER,
    color: str | Sequence[str] | None = None,
    *,
    reps: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    n_neighbors: int = 15,
    random_state: int = 0,
    recompute: bool = False,
    axs: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: bool | str | None = None,
    return_fig: bool | None = None,
    **kwargs,
) -> Figure | list[Axes] | None:
    """UMAPs of the semantic, structural and fused embeddings side by side.

    Each embedding gets its own UMAP (15-nearest-neighbour graph on the representation, then
    :func:`scanpy.tl.umap`), computed on a temporary object; nothing is written to ``adata``
    (``obsp``, ``uns["neighbors"]`` and colour palettes in ``uns`` are left as they are). A UMAP
    already stored in ``adata.obsm["X_umap_<rep without X_>"]`` (see
    :func:`~scllm_dsc.pl.umap_key`) is used instead; to draw repeatedly without recomputing,
    store them once, e.g. ``sc.pp.neighbors(adata, use_rep=rep, key_added=rep)`` then
    ``sc.tl.umap(adata, neighbors_key=rep, key_added=sd.pl.umap_key(rep))``.

    Parameters
    ----------
    {adata}
    key
        ``key_added`` of :func:`scllm_dsc.tl.cluster`.
    color
        Column(s) of ``adata.obs`` or gene name(s) to colour by; one row of panels per entry.
        Default: the clusters ``adata.obs[key]``.
    reps
        ``obsm`` keys of the embeddings to show. Default: ``X_<key>_semantic``,
        ``X_<key>_structural`` and ``X_<key>`` (fused).
    titles
        Panel titles, one per representation.
    n_neighbors
        Size of the neighbourhood graph behind each UMAP.
    {random_state}
    recompute
        Compute the UMAPs even where ``adata.obsm`` holds one (e.g. after re-training).
    axs
        Axes to draw into, ``len(reps) * len(color)`` of them, row by row.
    show
        Show the plot (default :attr:`scanpy.settings.autoshow`).
    save
        Save the figure like :mod:`scanpy.pl` does (``True`` or a file-name suffix).
    return_fig
        Return the :class:`~matplotlib.figure.Figure`.
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (e.g. ``size``, ``frameon``, ``legend_loc``).

    Returns
    -------
    The figure if ``return_fig``; the list of axes if ``show=False``; else ``None``.
    """
    import anndata as ad
    import scanpy as sc

    if reps is None:
        reps = [semantic_key(key), structural_key(key), Key.latent(key)]
        default_titles = ["semantic view", "structural view", "fused"]
    else:
        reps = list(reps)
        default_titles = list(reps)
    for rep in reps:
        require(adata, "obsm", rep, _cluster_hint(key))
    titles = list(titles) if titles is not None else default_titles
    if len(titles) != len(reps):
        raise ValueError(f"`titles` needs {len(reps)} entries, got {len(titles)}.")

    if color is None:
        if key not in adata.obs.columns:
            raise MissingKeyError(f"`adata.obs[{key!r}]` not found: {_cluster_hint(key)}.")
        colors = [key]
    else:
        colors = [color] if isinstance(color, str) else list(color)
    for c in colors:
        if c not in adata.obs.columns and c not in adata.var_names:
            raise MissingKeyError(
                f"`color={c!r}` is neither a column of `adata.obs` nor a gene in `adata.var_names`."
            )

    coords = {}
    for rep in reps:
        ukey = umap_key(rep)
        if recompute or ukey not in adata.obsm:
            coords[ukey] = _umap_of(adata.obsm[rep], adata.obs_names, n_neighbors, random_state)
        else:
            coords[ukey] = np.asarray(adata.obsm[ukey])

    # a light object to plot from, so that scanpy's palette bookkeeping stays off `adata`
    obs = {}
    uns = {}
    for c in colors:
        obs[c] = adata.obs[c].values if c in adata.obs.columns else adata.obs_vector(c)
        if f"{c}_colors" in adata.uns:
            uns[f"{c}_colors"] = np.array(adata.uns[f"{c}_colors"])
    plot = ad.AnnData(
        obs=obs,
        obsm=coords,
        uns=uns,
    )
    plot.obs_names = adata.obs_names

    n_panels = len(reps) * len(colors)
    if axs is None:
        fig, axes = new_grid(n_panels, len(reps), (4.0, 3.6), wspace=0.15, hspace=0.3)
    else:
        fig, axes = check_axs(axs, n_panels)
    user_legend = kwargs.pop("legend_loc", None)
    i = 0
    for c in colors:
        for j, rep in enumerate(reps):
            last = j == len(reps) - 1
            legend_loc = user_legend if user_legend is not None else (
                "right margin" if last else "none"
            )
            sc.pl.embedding(
                plot,
                basis=umap_key(rep),
                color=c,
                ax=axes[i],
                show=False,
                title=titles[j] if len(colors) == 1 else f"{titles[j]}: {c}",
                legend_loc=legend_loc,
                **({"colorbar_loc": "right" if last else None} | kwargs),
            )
            axes[i].set_xlabel("UMAP1")
            axes[i].set_ylabel("UMAP2")
            i += 1
    return finish(fig, axes, "views", show=show, save=save, return_fig=return_fig)
