"""The model's initial partition at the true k: ``init="kmeans"``, ``"merge"`` and
``"auto"`` (the default: the merge partition when every one of its clusters has markers
against its most connected neighbour, some k-means cluster has not, and restarts reproduce
the merge at least as well as k-means).

``sd.tl.cluster`` as the quality suite runs it (``--methods``: scllm_dsc, or one of its
knowledge controls; Path 1 and Path 2, defaults otherwise), seeds 0-2; the ``choice`` column
holds ``model.init_choice_`` of the ``auto`` runs (the chosen partition; for each candidate,
the smallest marker count to a most connected neighbour and the number of clusters under 10;
and their agreement over restarts where the markers favour the merge). Labels score only.

With ``--init-only`` training stops after the initial partition (pre-training only, about
a tenth of the time): the ``ari`` column is then that of the initial partition.

Usage::

    python benchmarks/init_study.py --datasets Baron_human_subset Zheng_sortedPBMC_2140 \
        Pancreas_endocrinogenesis_739 --out benchmarks/results/init_study.csv
"""

from __future__ import annotations

import argparse
import os
import sys
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, DEFAULT_GENETEXT, RESULTS, load_labelled, quiet_training  # noqa: E402
from quality import METHODS, Context  # noqa: E402


class _InitDone(Exception):
    """Raised with the initial partition to end training there (``--init-only``)."""


def _stop_after_init():
    from scllm_dsc.model import SCLLMDSC

    pick = SCLLMDSC._pick_partition

    def pick_and_stop(self, zs, sub, rs):
        raise _InitDone(pick(self, zs, sub, rs), self)

    SCLLMDSC._pick_partition = pick_and_stop


def _run(adata, k, seed, init, method, ctx):
    """``sd.tl.cluster`` as quality.py's ``method`` runs it: the labels and the model."""
    try:
        return METHODS[method](adata, k, seed, ctx, model_kwargs={"init": init},
                               return_model=True)
    except _InitDone as done:
        return done.args


def main(argv=None):
    from sklearn.metrics import adjusted_rand_score

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--inits", nargs="+", default=["kmeans", "merge", "auto"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=["scllm_dsc"],
                   choices=["scllm_dsc", "ablation_no_semantic", "control_random_vectors"],
                   help="configurations as in quality.py")
    p.add_argument("--init-only", action="store_true",
                   help="stop after the initial partition and score it")
    p.add_argument("--out", type=Path, default=RESULTS / "init_study.csv")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_training(a.threads)
    if a.init_only:
        if a.inits != ["auto"]:
            p.error("--init-only scores the partition init='auto' picks: pass --inits auto")
        _stop_after_init()
    rows = []
    for name in a.datasets:
        adata, y = load_labelled(DEFAULT_DATA, name)
        k = len(np.unique(y))
        ctx = Context(adata, DEFAULT_GENETEXT, 0)
        ctx.semantic()
        for method, seed, init in product(a.methods, a.seeds, a.inits):
            labels, model = _run(adata, k, seed, init, method, ctx)
            rows.append({"dataset": name, "method": method, "seed": seed, "init": init,
                         "ari": adjusted_rand_score(y, labels),
                         "choice": str(getattr(model, "init_choice_", ""))})
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(a.out, index=False)
    table = pd.DataFrame(rows).pivot_table(index=["method", "init"], columns="dataset",
                                           values="ari")
    table["mean"] = table.mean(1)
    print(table.round(3).to_markdown())


if __name__ == "__main__":
    main()
