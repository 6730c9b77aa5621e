"""How much of k-means' ARI is the luck of its local minimum: ARI and inertia per restart count.

k-means on the baselines' PCA (``kmeans_pca`` of ``quality.py``) is run with 1, 10 and 100
k-means++ restarts (``n_init``) for several seeds. When the ARI falls as ``n_init`` grows,
the partitions that agree with the labels are local minima of the k-means objective and the
objective's better optimum disagrees with them: no method minimising a k-means-like criterion
on this representation can be expected to find them reliably. Labels are used only to score.

Usage::

    python benchmarks/kmeans_minima.py Baron_human_subset Zheng_sortedPBMC_2140 --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, load_labelled, log_normalised_pca, scores  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="+")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--n-init", nargs="+", type=int, default=[1, 10, 100])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=RESULTS / "kmeans_minima.csv")
    args = p.parse_args(argv)

    from sklearn.cluster import KMeans

    rows = []
    for name in args.datasets:
        adata, truth = load_labelled(args.data_dir, name)
        k = len(set(truth))
        for seed in args.seeds:
            X = log_normalised_pca(adata, random_state=seed).obsm["X_pca"]
            for n_init in args.n_init:
                km = KMeans(k, n_init=n_init, random_state=seed).fit(X)
                rows.append({"dataset": name, "seed": seed, "n_init": n_init,
                             "ari": scores(truth, km.labels_)["ari"], "inertia": km.inertia_})
                print(f"{name:28s} seed {seed} n_init {n_init:4d}  ARI {rows[-1]['ari']:.3f}  "
                      f"inertia {km.inertia_:.1f}", flush=True)
    df = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    table = df.groupby(["dataset", "n_init"]).agg(
        ari_mean=("ari", "mean"), ari_min=("ari", "min"), ari_max=("ari", "max"),
        inertia_mean=("inertia", "mean"))
    md = table.round(3).to_markdown()
    args.out.with_suffix(".md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
