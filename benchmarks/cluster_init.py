"""``sd.tl.cluster`` with the transport target's marginals and the centre initialisation
switched: before (hard-size marginals, k-means / Leiden init) and after (estimated marginals,
over-cluster-and-merge init), at the true k and with ``n_clusters=None``.

Usage::

    python benchmarks/cluster_init.py --datasets PBMC68k_reduced_700 --seeds 0 \
        --out results/cluster_init.csv
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, RESULTS, load_labelled, quiet_training  # noqa: E402

CONFIGS = {
    # name: (marginals, init, given k?)
    "before_k": ("hard", "kmeans", True),
    "estimated_k": ("estimated", "kmeans", True),
    "estimated_merge_k": ("estimated", "merge", True),
    "before_auto": ("hard", "kmeans", False),  # n_clusters=None: Leiden at resolution 1
    "estimated_merge_auto": ("estimated", "merge", False),
}


def main(argv=None):
    from sklearn.metrics import adjusted_rand_score as ari

    import scllm_dsc as sd
    import scllm_dsc.nn as snn
    from scllm_dsc.nn._losses import sinkhorn_target

    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=["PBMC68k_reduced_700"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--use-semantic", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "cluster_init.csv")
    a = p.parse_args(argv)
    quiet_training(1)
    rows = []
    for name in a.datasets:
        adata, y = load_labelled(DEFAULT_DATA, name)
        k = len(np.unique(y))
        for seed in a.seeds:
            for c in a.configs:
                marginals, init, given = CONFIGS[c]
                snn.sinkhorn_target = functools.partial(sinkhorn_target, marginals=marginals)
                ad_ = adata.copy()
                t0 = time.perf_counter()
                sd.tl.cluster(ad_, k if given else None, random_state=seed,
                              use_semantic=a.use_semantic, model_kwargs={"init": init},
                              train_kwargs={"enable_progress_bar": False,
                                            "enable_model_summary": False})
                lab = ad_.obs["scllm_dsc"].to_numpy()
                rows.append({"dataset": name, "seed": seed, "config": c, "k": k,
                             "k_found": len(np.unique(lab)), "ari": ari(y, lab),
                             "seconds": time.perf_counter() - t0})
                print(rows[-1], flush=True)
                pd.DataFrame(rows).to_csv(a.out, index=False)
    snn.sinkhorn_target = sinkhorn_target


if __name__ == "__main__":
    main()
