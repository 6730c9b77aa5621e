"""The model's initial partition at the true k: ``init="kmeans"``, ``"merge"`` and
``"auto"`` (the default: the merge partition when every one of its clusters has markers
against its most connected neighbour and some k-means cluster has not).

``sd.tl.cluster`` as the quality suite runs it (Path 1 and Path 2, defaults otherwise), seeds
0-2; the ``choice`` column holds ``model.init_choice_`` of the ``auto`` runs (the chosen
partition and, for each candidate, the smallest marker count to a most connected neighbour
and the number of clusters under 10). Labels score only.

Usage::

    python benchmarks/init_study.py --datasets Baron_human_subset Zheng_sortedPBMC_2140 \
        Pancreas_endocrinogenesis_739 --out benchmarks/results/init_study.csv
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, DEFAULT_GENETEXT, RESULTS, load_labelled, quiet_training  # noqa: E402
from quality import Context  # noqa: E402


def main(argv=None):
    from sklearn.metrics import adjusted_rand_score

    import scllm_dsc as sd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--inits", nargs="+", default=["kmeans", "merge", "auto"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "init_study.csv")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_training(a.threads)
    rows = []
    for name in a.datasets:
        adata, y = load_labelled(DEFAULT_DATA, name)
        k = len(np.unique(y))
        ctx = Context(adata, DEFAULT_GENETEXT, 0)
        ctx.semantic()
        for seed in a.seeds:
            for init in a.inits:
                b = adata.copy()
                model = sd.tl.cluster(b, k, random_state=seed, return_model=True,
                                      model_kwargs={"init": init}, **ctx.quiet)
                rows.append({"dataset": name, "seed": seed, "init": init,
                             "ari": adjusted_rand_score(y, b.obs["scllm_dsc"]),
                             "choice": str(getattr(model, "init_choice_", ""))})
                print(rows[-1], flush=True)
                pd.DataFrame(rows).to_csv(a.out, index=False)
    table = pd.DataFrame(rows).pivot_table(index="init", columns="dataset", values="ari")
    table["mean"] = table.mean(1)
    print(table.round(3).to_markdown())


if __name__ == "__main__":
    main()
