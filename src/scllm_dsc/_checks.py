"""Key checks shared by ``sd.tl`` and ``sd.pl``: the error that names the call to run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._constants import Key

if TYPE_CHECKING:
    from anndata import AnnData


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
