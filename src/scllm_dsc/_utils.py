"""Small helpers shared by the tools: input resolution, expression access, ranking."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    from anndata import AnnData


def resolve_adata(data, mod: str | None = None) -> AnnData:
    """Return the :class:`~anndata.AnnData` to work on.

    ``data`` may be an AnnData or a :class:`~mudata.MuData`; for MuData, ``mod`` names the
    modality (default ``"rna"``).
    """
    from anndata import AnnData

    if isinstance(data, AnnData):
        if mod is not None:
            raise ValueError("`mod` is only used with a MuData object; got an AnnData.")
        return data
    try:
        from mudata import MuData
    except ImportError:  # pragma: no cover - mudata is a dependency
        MuData = ()  # type: ignore[assignment]
    if isinstance(data, MuData):
        mod = mod or "rna"
        if mod not in data.mod:
            raise KeyError(
                f"MuData has no modality {mod!r}; available: {list(data.mod)}. "
                "Pass `mod=` with the name of the RNA modality."
            )
        return data.mod[mod]
    raise TypeError(f"Expected an AnnData or MuData object, got {type(data).__name__}.")


def get_matrix(adata: AnnData, layer: str | None = None):
    """Return ``adata.X`` or ``adata.layers[layer]`` without copying.

    Raises a clear error if the layer does not exist.
    """
    if layer is None:
        X = adata.X
        if X is None:
            raise ValueError("`adata.X` is empty; pass `layer=` with the name of the counts layer.")
        return X
    if layer not in adata.layers:
        raise KeyError(
            f"Layer {layer!r} not found in `adata.layers` (available: {list(adata.layers)})."
        )
    return adata.layers[layer]


def iter_row_chunks(X, chunk_size: int = 4096):
    """Yield ``(start, stop, block)`` over rows of ``X`` as CSR or dense float arrays.

    Works for in-memory dense/sparse arrays and for backed datasets; never densifies more than
    ``chunk_size`` rows at once.
    """
    n = X.shape[0]
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        block = X[start:stop]
        if sparse.issparse(block):
            block = sparse.csr_matrix(block)
        elif hasattr(block, "toarray") and not isinstance(block, np.ndarray):  # backed sparse
            block = sparse.csr_matrix(block.to_memory() if hasattr(block, "to_memory") else block)
        else:
            block = np.asarray(block)
        yield start, stop, block


def to_csr(X, dtype=None, copy: bool = False) -> sparse.csr_matrix:
    """``X`` (dense, sparse or backed) as an in-memory CSR matrix.

    Backed matrices are read in row chunks. With ``copy=False`` an in-memory CSR matrix of
    the right dtype is returned as it is, so never modify the result in place.
    """
    if sparse.issparse(X) or isinstance(X, np.ndarray):
        return sparse.csr_matrix(X, dtype=dtype, copy=copy)
    blocks = [sparse.csr_matrix(b, dtype=dtype) for _, _, b in iter_row_chunks(X)]
    if not blocks:
        return sparse.csr_matrix(X.shape, dtype=dtype or X.dtype)
    return sparse.csr_matrix(sparse.vstack(blocks, format="csr"), dtype=dtype)


def check_values(X, layer: str | None = None, *, allow_negative: bool = False) -> None:
    """Raise a clear error if ``X`` holds NaN, infinite or (unless allowed) negative values.

    Scans every row, in chunks, so backed matrices are never loaded at once.
    """
    where = f"layer {layer!r}" if layer else "`adata.X`"
    n_bad = n_neg = 0
    for _, _, block in iter_row_chunks(X):
        vals = block.data if sparse.issparse(block) else np.asarray(block).ravel()
        if vals.dtype.kind not in "biuf":
            raise TypeError(
                f"{where} has dtype {vals.dtype}; expected numbers (raw counts or "
                "normalised expression)."
            )
        if vals.dtype.kind == "f":
            n_bad += int((~np.isfinite(vals)).sum())
        if not allow_negative and vals.dtype.kind in "if":
            n_neg += int((vals < 0).sum())
    if n_bad:
        raise ValueError(
            f"{where} has {n_bad} NaN or infinite values; expression must be finite. Fix or "
            "remove them (e.g. `np.nan_to_num`, or drop the affected cells/genes), or pass "
            "`layer=` with the raw counts."
        )
    if n_neg:
        raise ValueError(
            f"{where} has {n_neg} negative values (scaled data?). Pass `layer=` with raw "
            "counts (or non-negative normalised expression)."
        )


def looks_like_counts(X, n_rows: int = 500) -> bool:
    """Heuristic: are the first ``n_rows`` rows finite non-negative integers?"""
    block = X[: min(n_rows, X.shape[0])]
    if sparse.issparse(block):
        vals = block.data
    elif hasattr(block, "toarray") and not isinstance(block, np.ndarray):
        vals = np.asarray(block.toarray()).ravel()
    else:
        vals = np.asarray(block).ravel()
    if vals.size == 0:
        return True
    vals = vals.astype(np.float64, copy=False)
    return bool(
        np.all(np.isfinite(vals)) and np.all(vals >= 0) and np.allclose(vals, np.round(vals))
    )


def counts_hint(adata, layer: str | None = None) -> str:
    """Where the raw counts of ``adata`` are (or usually are), as advice for an error.

    Names the layers (and ``adata.raw``) that hold non-negative integers, and says how to
    keep counts before normalising when none does.
    """
    where = "`adata.X`" if layer is None else f"layer {layer!r}"
    found = [
        f"layer={name!r}"
        for name, mat in adata.layers.items()
        if name != layer and looks_like_counts(mat)
    ]
    raw = getattr(adata, "raw", None)
    if raw is not None and looks_like_counts(raw.X):
        found.append("`adata.raw.to_adata()` (counts in `adata.raw`)")
    msg = f"{where} does not look like raw counts (log-normalised or scaled?). "
    if found:
        return msg + "Counts found here: " + "; ".join(found) + "."
    return msg + (
        f"Layers: {list(adata.layers)}; no layer or `adata.raw` holds counts. Counts are "
        'usually in `adata.layers["counts"]` or `adata.raw`: pass `layer="counts"`, or keep '
        'them before normalising with `adata.layers["counts"] = adata.X.copy()`.'
    )


def require_counts(adata, layer: str | None, who: str):
    """The expression matrix of ``adata`` (``X`` or ``layer``), checked to hold raw counts.

    Raises a :class:`ValueError` that starts with ``who`` and says where counts are
    (:func:`counts_hint`) when the values are not non-negative integers.
    """
    X = get_matrix(adata, layer)
    check_values(X, layer)
    if not looks_like_counts(X):
        raise ValueError(
            f"{who} needs raw counts (non-negative integers; pass `layer=` with them): "
            + counts_hint(adata, layer)
        )
    return X


class TopK(NamedTuple):
    """The top entries of each row, CSR style: row ``i`` owns ``indptr[i]:indptr[i+1]``.

    Within a row, entries are sorted by descending value; ties are broken by ascending
    column index, so the order is deterministic.
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray


def top_k_per_row(X, k: int, chunk_size: int = 4096) -> TopK:
    """Top ``k`` strictly positive entries of each row of ``X`` (sparse, dense or backed).

    Zeros are never returned, so a row with fewer than ``k`` non-zero entries gives fewer.
    Memory is linear in ``n_rows * k`` plus one chunk.
    """
    if k < 1:
        raise ValueError(f"`k` must be >= 1, got {k}.")
    indptrs, indices_out, values_out = [np.zeros(1, dtype=np.int64)], [], []
    offset = 0
    for _, _, block in iter_row_chunks(X, chunk_size):
        block = sparse.csr_matrix(block)
        block.eliminate_zeros()
        n_rows = block.shape[0]
        counts = np.diff(block.indptr)
        rows = np.repeat(np.arange(n_rows), counts)
        data = np.asarray(block.data, dtype=np.float64)
        keep = data > 0
        rows, cols, data = rows[keep], block.indices[keep], data[keep]
        order = np.lexsort((cols, -data, rows))
        rows, cols, data = rows[order], cols[order], data[order]
        row_counts = np.bincount(rows, minlength=n_rows)
        starts = np.concatenate([[0], np.cumsum(row_counts)[:-1]])
        rank = np.arange(rows.size) - starts[rows]
        sel = rank < k
        kept = np.minimum(row_counts, k)
        indptrs.append(offset + np.cumsum(kept))
        offset += int(kept.sum())
        indices_out.append(cols[sel].astype(np.int64))
        values_out.append(data[sel])
    return TopK(
        np.concatenate(indptrs),
        np.concatenate(indices_out) if indices_out else np.zeros(0, np.int64),
        np.concatenate(values_out) if values_out else np.zeros(0),
    )


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation (:func:`sklearn.preprocessing.normalize`); zero rows stay zero."""
    from sklearn.preprocessing import normalize

    X = np.asarray(X)
    return normalize(X) if X.size else X.copy()  # sklearn rejects empty arrays
