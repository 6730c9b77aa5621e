"""Wall time and peak memory of one ``sd.tl.cluster`` call with the text embeddings cached.

The semantic view is computed first (outside the timing) with ``sd.tl.embed_genes`` and
``sd.tl.cell_sentences`` (cached on disk by the package, ``SCLLM_DSC_CACHE``), or read from
``--semantic-cache DIR`` (``{dataset}_sem.npz`` with ``X_gene_text`` and ``X_cell_sentence``).
Peak memory is the process's maximum resident set size (``getrusage``), data included.

Usage::

    python benchmarks/cluster_time.py Kang_ctrl_PBMC_8684 --threads 2
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DEFAULT_DATA,
    DEFAULT_GENETEXT,
    load_labelled,
    quiet_training,
    scores,
    species_of,
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--genetext-dir", type=Path, default=DEFAULT_GENETEXT)
    p.add_argument("--semantic-cache", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import scllm_dsc as sd

    quiet_training(args.threads)
    adata, truth = load_labelled(args.data_dir, args.dataset, args.semantic_cache)
    if args.semantic_cache is None:
        species = species_of(adata)
        sd.tl.embed_genes(adata, knowledge=args.genetext_dir / f"{species}_gene_text.tsv.gz",
                          species=species)
        sd.tl.cell_sentences(adata)
    t0 = time.perf_counter()
    sd.tl.cluster(adata, n_clusters=len(set(truth)), random_state=args.seed,
                  train_kwargs={"enable_progress_bar": False})
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in adata.uns["scllm_dsc"]["timings"].items())
    print(f"| {args.dataset} | {adata.n_obs} | {args.threads} | {wall:.1f} | {stages} | "
          f"{peak:.0f} | {scores(truth, adata.obs['scllm_dsc'])['ari']:.3f} |")


if __name__ == "__main__":
    main()
