"""Study (PCA level, no deep model): at the true k, pick the initial partition between k-means
and over-cluster-and-merge by how well separated neighbouring clusters are.

For each dataset and seed: scanpy's pipeline to 50 PCs and a 15-NN graph; k-means (10
restarts) and :func:`scllm_dsc.graph.overcluster_merge` at the true k; for each partition,
every cluster's most connected neighbour (edge weight over the square root of the volumes) and
the number of marker genes between the two (the merge's marker definition). Rules:
``pick_fewest_weak`` takes the partition with fewer clusters under 10 markers from their
neighbour (ties: the larger minimum); ``pick_min`` the larger minimum. Labels score only.

Usage::

    python benchmarks/init_pick_study.py Zheng_sortedPBMC_2140 Baron_human_subset \
        Pancreas_endocrinogenesis_739
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import pandas as pd
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, log_normalised_pca  # noqa: E402

from scllm_dsc.graph._leiden import _graph  # noqa: E402
from scllm_dsc.graph._merge import log_normalize, overcluster_merge, separation  # noqa: E402


def main(names: list[str]) -> pd.DataFrame:
    rows = []
    for name in names:
        a = ad.read_h5ad(Path(DEFAULT_DATA) / f"{name}.h5ad")
        y = a.obs["cell_type"].astype(str).to_numpy()
        k = len(set(y))
        Xl = log_normalize(sparse.csr_matrix(a.X))
        for seed in (0, 1, 2):
            Z = log_normalised_pca(a, random_state=seed).obsm["X_pca"]
            W = _graph(Z, 15, seed).obsp["connectivities"]
            parts = {"kmeans": KMeans(k, n_init=10, random_state=seed).fit_predict(Z),
                     "merge": overcluster_merge(Z, a.X, k, random_state=seed)}
            sep = {m: separation(lab, W, Xl) for m, lab in parts.items()}
            picks = {
                "pick_fewest_weak": max(parts, key=lambda m: (-sep[m][1], sep[m][0])),
                "pick_min": max(parts, key=lambda m: sep[m][0]),
            }
            for m, lab in parts.items():
                rows.append({"dataset": name, "seed": seed, "method": m,
                             "ari": adjusted_rand_score(y, lab), "min_markers": sep[m][0],
                             "n_weak": sep[m][1]})
            for rule, m in picks.items():
                rows.append({"dataset": name, "seed": seed, "method": rule,
                             "ari": adjusted_rand_score(y, parts[m])})
    df = pd.DataFrame(rows)
    table = df.pivot_table(index="method", columns="dataset", values="ari")
    table["mean"] = table.mean(1)
    print(table.round(3).to_markdown())
    return df


if __name__ == "__main__":
    main(sys.argv[1:])
