"""ARI of ``sd.tl.cluster`` with given options, for quick sweeps of one setting.

Labels are used only to score. The semantic view is read from ``--semantic-cache DIR``
(``{dataset}_sem.npz`` with ``X_gene_text`` and ``X_cell_sentence``, rows as in the h5ad) or,
with ``--structural``, not used. Options are ``key=value`` pairs passed to ``sd.tl.cluster``;
``m.key=value`` goes to ``model_kwargs``, ``t.key=value`` to ``train_kwargs``.

Usage::

    python benchmarks/sweep.py Baron_human_subset --seeds 0 1 --structural n_latent=16
    python benchmarks/sweep.py Zheng_sortedPBMC_2140 --semantic-cache DIR semantic_weight=0.15
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, load_labelled, quiet_training, scores  # noqa: E402


def parse_options(pairs: list[str]) -> dict:
    out: dict = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        if key.startswith("m."):
            out.setdefault("model_kwargs", {})[key[2:]] = value
        elif key.startswith("t."):
            out.setdefault("train_kwargs", {})[key[2:]] = value
        else:
            out[key] = value
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("options", nargs="*", help="key=value options of sd.tl.cluster")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--semantic-cache", type=Path, default=None)
    p.add_argument("--structural", action="store_true", help="use_semantic=False")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_intermixed_args(argv)
    if not args.structural and args.semantic_cache is None:
        p.error("pass --semantic-cache DIR or --structural")

    import scllm_dsc as sd

    quiet_training(args.threads)
    cache = None if args.structural else args.semantic_cache
    adata, truth = load_labelled(args.data_dir, args.dataset, cache)
    options = parse_options(args.options)
    options.setdefault("train_kwargs", {}).update(enable_progress_bar=False,
                                                  enable_model_summary=False)
    aris = []
    for seed in args.seeds:
        a = adata.copy()
        t0 = time.perf_counter()
        sd.tl.cluster(a, n_clusters=len(set(truth)), random_state=seed,
                      use_semantic=not args.structural, **options)
        aris.append(scores(truth, a.obs["scllm_dsc"].to_numpy())["ari"])
        print(f"{args.dataset} seed {seed}: ARI {aris[-1]:.3f} "
              f"({a.obs['scllm_dsc'].nunique()} clusters, {time.perf_counter() - t0:.0f} s)",
              flush=True)
    view = "structural" if args.structural else "semantic+structural"
    print(f"MEAN {args.dataset} {view} {' '.join(args.options)}: ARI {np.mean(aris):.3f}")


if __name__ == "__main__":
    main()
