"""Mapping new cells onto a trained model's reference (the encoder's inputs for query cells).

The structural encoder reads SIGN features ``[X, ÂX, Â²X]`` of the expression PCA over the
kNN cell graph. For cells that were not in the training data, the PCA is the reference's
(its highly variable genes, centre and loadings, stored with the model) and the graph is the
query cell's neighbourhood among the *reference* cells: its ``n_neighbors - 1`` nearest
training cells in the stored PCA space, weighted by UMAP's fuzzy membership (as
:func:`scanpy.pp.neighbors` does, one-directional since the reference graph is not changed
by the query). The propagated features then follow from the reference cells' stored hops:
``h_{m+1}(q) = h_m(q) / d_q + sum_j w_qj h_m(j) / sqrt(d_q d_j)`` with degrees ``d``
including the self loop, which is what the training features are for a cell of the graph.
Query cells are mapped independently of each other, so a cell's embedding does not depend
on which other cells are mapped with it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from .._utils import require_counts, to_csr

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

# more than this share of the reference's highly variable genes missing: refuse to map
MAX_MISSING_GENES = 0.5


def gene_reference(
    gene_names, highly_variable, mean, loadings, scale: float, n_neighbors: int,
    n_hops: int, target_sum: float,
) -> dict:
    """What maps a cell's counts to the reference's scaled PCA (stored in ``uns``)."""
    return {
        "genes": np.asarray(gene_names, dtype=str)[np.asarray(highly_variable, dtype=bool)],
        "mean": np.asarray(mean, dtype=np.float32),
        "loadings": np.asarray(loadings, dtype=np.float32),
        "scale": float(scale),
        "n_neighbors": int(n_neighbors),
        "n_hops": int(n_hops),
        "target_sum": float(target_sum),
    }


def cells_fingerprint(obs_names) -> str:
    """A hash of the cell names in order (tells the training cells from new cells)."""
    import hashlib

    names = "\n".join(map(str, obs_names))
    return hashlib.sha1(f"{len(obs_names)}\n{names}".encode()).hexdigest()


def cell_reference(
    genes: dict, features: np.ndarray, connectivities, obs_names=None
) -> dict:
    """The reference cells' side: their hops ``0 .. n_hops - 1``, graph degrees and the
    fingerprint of their names."""
    n_pcs = genes["loadings"].shape[1]
    C = sparse.csr_matrix(connectivities)
    C = C - sparse.diags(C.diagonal())
    degree = 1.0 + np.asarray(C.sum(1), dtype=np.float64).ravel()
    return {
        **genes,
        "hops": features[:, : n_pcs * genes["n_hops"]],  # a view: no copy in memory
        "degree": degree.astype(np.float32),
        "cells": None if obs_names is None else cells_fingerprint(obs_names),
    }


def query_pca(adata: AnnData, layer: str | None, ref: dict) -> np.ndarray:
    """The query cells in the reference's scaled PCA space (cells x n_pcs, float32)."""
    X = require_counts(adata, layer, "Mapping query cells (same layer as the reference's)")
    genes = np.asarray(ref["genes"], dtype=str)
    pos = adata.var_names.get_indexer(genes)
    missing = pos < 0
    if missing.mean() > MAX_MISSING_GENES:
        raise ValueError(
            f"{int(missing.sum())} of the reference's {genes.size} highly variable genes are "
            f"not in the query's `var_names` (e.g. {', '.join(genes[missing][:5])}); the "
            "cells cannot be mapped. Use the same gene identifiers as the reference."
        )
    if missing.any():
        logger.warning(
            "%d of %d reference genes are missing from the query; they are set to the "
            "reference mean (no contribution to the PCA).", int(missing.sum()), genes.size,
        )
    X = to_csr(X, np.float32)
    lib = np.asarray(X.sum(1), dtype=np.float64).ravel()
    factor = ref["target_sum"] / np.where(lib > 0, lib, 1.0)
    Xh = sparse.diags(factor.astype(np.float32)) @ X[:, np.where(missing, 0, pos)]
    Xh = sparse.csr_matrix(Xh)
    Xh.data = np.log1p(Xh.data)
    L = np.asarray(ref["loadings"], dtype=np.float32)
    mean = np.asarray(ref["mean"], dtype=np.float32)
    keep = (~missing).astype(np.float32)
    # (x - mean) @ L with missing genes contributing nothing
    pca = np.asarray(Xh @ (L * keep[:, None])) - (mean * keep) @ L
    return (pca / ref["scale"]).astype(np.float32)


def reference_neighbours(
    ref_pca: np.ndarray, query: np.ndarray, k: int, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest reference cells of each query cell: (indices int64, distances)."""
    from ..graph._build import EXACT_KNN_MAX_CELLS

    if ref_pca.shape[0] > EXACT_KNN_MAX_CELLS:
        import scanpy as sc
        from pynndescent import NNDescent

        index = NNDescent(ref_pca, n_neighbors=max(k, 15), random_state=random_state,
                          n_jobs=int(sc.settings.n_jobs or 1))
        idx, dist = index.query(query, k=k)
    else:
        from sklearn.neighbors import NearestNeighbors

        dist, idx = NearestNeighbors(n_neighbors=k).fit(ref_pca).kneighbors(query)
    return idx.astype(np.int64), dist.astype(np.float32)


def memberships(dist: np.ndarray) -> np.ndarray:
    """UMAP fuzzy membership of each query cell's reference neighbours (cells x k).

    The cell itself counts as the nearest neighbour at distance 0, as in the reference's
    graph (scanpy includes each cell among its ``n_neighbors``).
    """
    from umap.umap_ import smooth_knn_dist

    d = np.hstack([np.zeros((dist.shape[0], 1), np.float32), dist]).astype(np.float32)
    sigmas, rhos = smooth_knn_dist(d, float(d.shape[1]), local_connectivity=1.0)
    w = np.exp(-np.maximum(dist - rhos[:, None], 0.0) / sigmas[:, None])
    return w.astype(np.float32)


def map_features(
    pca: np.ndarray, idx: np.ndarray, w: np.ndarray, ref: dict, chunk: int = 50_000
) -> np.ndarray:
    """SIGN features of query cells over their reference neighbourhoods (see the module)."""
    n_pcs, n_hops = pca.shape[1], int(ref["n_hops"])
    hops, degree = ref["hops"], np.asarray(ref["degree"], dtype=np.float32)
    out = np.empty((pca.shape[0], n_pcs * (n_hops + 1)), dtype=np.float32)
    for start in range(0, pca.shape[0], chunk):
        sl = slice(start, start + chunk)
        i, wi, cur = idx[sl], w[sl], pca[sl]
        d_q = 1.0 + wi.sum(1)
        coef = wi / np.sqrt(d_q[:, None] * degree[i])
        parts = [cur]
        for h in range(n_hops):
            ref_h = np.asarray(hops[:, h * n_pcs : (h + 1) * n_pcs])
            cur = cur / d_q[:, None] + np.einsum("qk,qkp->qp", coef, ref_h[i])
            parts.append(cur)
        out[sl] = np.hstack(parts)
    return out


def map_cells(adata: AnnData, layer: str | None, ref: dict, random_state: int = 0) -> dict:
    """Features and neighbour table of query cells (``features``, ``nn_indices`` into the
    reference cells, ``nn_weights``)."""
    pca = query_pca(adata, layer, ref)
    n_pcs = pca.shape[1]
    ref_pca = np.ascontiguousarray(ref["hops"][:, :n_pcs], dtype=np.float32)
    k = int(ref["n_neighbors"]) - 1
    if ref_pca.shape[0] < k or k < 1:
        raise ValueError(f"The reference has too few cells ({ref_pca.shape[0]}) to map onto.")
    idx, dist = reference_neighbours(ref_pca, pca, k, random_state)
    w = memberships(dist)
    return {"features": map_features(pca, idx, w, ref), "nn_indices": idx, "nn_weights": w}
