"""Small offline example data."""

from __future__ import annotations

import numpy as np
from scipy import sparse


def pbmc68k_counts():
    """700 PBMCs of scanpy's bundled ``pbmc68k_reduced`` with integer counts.

    scanpy ships these cells log-normalised in ``.raw`` (765 genes). Counts are recovered per
    cell as ``round(expm1(x) / min_nonzero(expm1(x)))``, which is exact up to a per-cell scale
    factor. ``obs["bulk_labels"]`` holds the published (noisy) cell-type labels. Nothing is
    downloaded.

    Returns
    -------
    :class:`~anndata.AnnData` with raw counts in ``X`` (CSR, float32).
    """
    import anndata as ad
    import scanpy as sc

    src = sc.datasets.pbmc68k_reduced()
    logn = sparse.csr_matrix(src.raw.X)
    expd = logn.copy()
    expd.data = np.expm1(expd.data)
    # the smallest non-zero value of each cell is one count
    mins = np.array(
        [row.data.min() if row.nnz else 1.0 for row in expd],  # 700 rows: cheap
        dtype=np.float64,
    )
    counts = sparse.diags(1.0 / mins) @ expd
    counts.data = np.round(counts.data)
    counts = sparse.csr_matrix(counts, dtype=np.float32)
    counts.eliminate_zeros()
    obs = src.obs[["bulk_labels"]].copy()
    return ad.AnnData(X=counts, obs=obs, var=src.raw.var[[]].copy())
