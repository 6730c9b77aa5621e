"""Helpers shared by the semantic-view tools: gene names, normalised expression, weights."""

from __future__ import annotations

import re

import numpy as np
from scipy import sparse

from .._utils import check_values, iter_row_chunks, looks_like_counts

_R_SUFFIX = re.compile(r"\.\d+$")
_ACCESSION = re.compile(r"^[A-Z]{1,2}\d{5,}\.\d+$")  # GenBank clone names like AL645728.1


def gene_names(adata, gene_symbols: str | None = None) -> np.ndarray:
    """Gene names from ``var_names`` or the ``var`` column ``gene_symbols``."""
    if gene_symbols is None:
        return np.asarray(adata.var_names.astype(str))
    if gene_symbols not in adata.var.columns:
        raise KeyError(
            f"`gene_symbols={gene_symbols!r}` is not a column of `adata.var` "
            f"(columns: {list(adata.var.columns)})."
        )
    col = adata.var[gene_symbols]
    names = col.astype(object).where(col.notna(), None)
    return np.asarray(
        [str(n) if n is not None else str(v) for n, v in zip(names, adata.var_names, strict=True)]
    )


def strip_r_suffix(symbols) -> np.ndarray:
    """Remove R's ``make.unique`` suffixes (``PNRC2.1`` -> ``PNRC2``).

    Clone-based names (``RP11-345P4.9``) and accessions (``AL645728.1``), whose dotted suffix
    belongs to the name, are kept.
    """
    out = []
    for s in symbols:
        s = str(s)
        if "-" not in s and not _ACCESSION.match(s):
            s = _R_SUFFIX.sub("", s)
        out.append(s)
    return np.asarray(out, dtype=object)


def check_expression(X, layer: str | None) -> bool:
    """Validate the expression matrix (finite, non-negative: every row is checked); return
    whether it looks like raw counts."""
    check_values(X, layer)
    return looks_like_counts(X)


def normalize_block(block, is_counts: bool, target_sum: float = 1e4):
    """log1p of library-size-normalised counts for a CSR/dense row block (non-counts: as is).

    scanpy's :func:`~scanpy.pp.normalize_total` and :func:`~scanpy.pp.log1p` on the block (row
    blocks keep backed and very large matrices out of memory).
    """
    block = sparse.csr_matrix(block, dtype=np.float64)
    if not is_counts:
        return block
    import warnings

    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(block)
    with warnings.catch_warnings():  # empty cells stay zero; the tools report them themselves
        warnings.filterwarnings("ignore", "Some cells have zero counts", UserWarning)
        sc.pp.normalize_total(tmp, target_sum=target_sum)
    sc.pp.log1p(tmp)
    return sparse.csr_matrix(tmp.X)


def gene_stats(X, is_counts: bool, chunk_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per gene: mean normalised expression and fraction of cells expressing."""
    n, m = X.shape
    total = np.zeros(m)
    nnz = np.zeros(m)
    for _, _, block in iter_row_chunks(X, chunk_size):
        norm = normalize_block(block, is_counts)
        total += np.asarray(norm.sum(0)).ravel()
        norm.eliminate_zeros()
        nnz += np.bincount(norm.indices, minlength=m)
    return total / max(n, 1), nnz / max(n, 1)


def idf_weights(frac_expressing: np.ndarray, n_cells: int) -> np.ndarray:
    """Inverse document frequency ``log((1 + n) / (1 + df))`` of each gene (>= 0)."""
    df = frac_expressing * n_cells
    return np.log((1.0 + n_cells) / (1.0 + df))
