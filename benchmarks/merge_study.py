"""Cheap study of over-cluster-and-merge on PCA / kNN graphs (no deep model).

For every shared dataset: scanpy's pipeline to PCA (50 PCs of 2,000 HVGs) and a 15-NN graph,
then (a) Leiden at the default resolution, (b) Leiden bisected to the true k, (c) k-means on
the PCs, (d) a Leiden over-clustering merged to the true k by edge weight / sqrt(n_i n_j)
(the issue's rule), (e) ``scllm_dsc.graph.overcluster_merge``: the over-clustering merged to
the true k (most connected pair first, pairs told apart by ``min_markers`` markers last) and
(f) with ``n_clusters=None`` (Leiden at ``--auto-resolution``, merged until every connected
pair has ``min_markers`` markers). Labels score only.

Usage::

    python benchmarks/merge_study.py --seeds 0 --out results/merge_study.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, load_labelled, log_normalised_pca  # noqa: E402
from quality import DATASETS  # noqa: E402


def edge_merge(labels, W, k):
    """The issue's rule: merge the pair with the largest edge weight / sqrt(n_i n_j)."""
    from scllm_dsc.graph._merge import cluster_weights

    _, labels = np.unique(labels, return_inverse=True)
    m = labels.max() + 1
    C = cluster_weights(labels, W, m)
    n = np.bincount(labels).astype(float)
    parent = np.arange(m)
    alive = np.ones(m, bool)
    while alive.sum() > k:
        S = C / np.sqrt(np.outer(n, n))
        np.fill_diagonal(S, -1)
        S[~alive] = -1
        S[:, ~alive] = -1
        i, j = np.unravel_index(np.argmax(S), S.shape)
        C[i] += C[j]
        C[:, i] += C[:, j]
        C[j] = C[:, j] = 0
        n[i] += n[j]
        alive[j] = False
        parent[parent == j] = i
    return parent[labels]


def main(argv=None):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score as ari

    from scllm_dsc.graph import leiden_labels, leiden_n_clusters
    from scllm_dsc.graph._leiden import _graph
    from scllm_dsc.graph._merge import overcluster_merge

    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--over", type=float, default=3.0, help="over-clustering: this many x k")
    p.add_argument("--auto-resolution", type=float, default=3.0)
    p.add_argument("--min-markers", type=int, default=10)
    p.add_argument("--min-lfc", type=float, default=1.0)
    p.add_argument("--min-t", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=RESULTS / "merge_study.csv")
    a = p.parse_args(argv)
    rows = []
    for name in a.datasets:
        adata, y = load_labelled(DEFAULT_DATA, name)
        k = len(np.unique(y))
        for seed in a.seeds:
            t0 = time.perf_counter()
            pca = log_normalised_pca(adata, random_state=seed)
            Xp = pca.obsm["X_pca"]
            W = _graph(Xp, 15, seed).obsp["connectivities"]  # the graph Leiden runs on
            res = {
                "leiden_default": leiden_labels(Xp, random_state=seed),
                "leiden_k": leiden_n_clusters(Xp, k, random_state=seed),
                "kmeans_pca": KMeans(k, n_init=10, random_state=seed).fit_predict(Xp),
            }
            over = leiden_n_clusters(Xp, int(round(a.over * k)), random_state=seed)
            res["edge_merge_k"] = edge_merge(over, W, k)
            counts = adata[:, pca.var_names].X  # the HVGs' counts
            kw = dict(min_markers=a.min_markers, min_lfc=a.min_lfc, min_t=a.min_t)
            res["marker_merge_k"] = overcluster_merge(Xp, counts, k, over=a.over,
                                                      random_state=seed, **kw)
            res["marker_merge_auto"] = overcluster_merge(
                Xp, counts, None, resolution=a.auto_resolution, random_state=seed, **kw)
            for m, lab in res.items():
                rows.append({"dataset": name, "seed": seed, "method": m, "k": k,
                             "k_found": len(np.unique(lab)), "ari": ari(y, lab)})
            print(name, seed, f"{time.perf_counter() - t0:.1f}s", {m: round(ari(y, lab), 3)
                  for m, lab in res.items()}, "k_auto", len(np.unique(res["marker_merge_auto"])),
                  "of", k, flush=True)
    df = pd.DataFrame(rows)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out, index=False)
    tab = df.groupby(["method", "dataset"]).ari.mean().unstack()
    tab["mean"] = tab.mean(1)
    print(tab.round(3).to_markdown())
    kf = df[df.method.isin(["marker_merge_auto", "leiden_default"])].groupby(
        ["method", "dataset"]).k_found.mean().unstack()
    print(kf.to_markdown())


if __name__ == "__main__":
    main()
