"""Speed and memory of each stage on synthetic data resampled from real cells.

Cells are drawn with replacement from a real dataset (default Kang_ctrl_PBMC_8684) and each
drawn cell's counts are binomially thinned with a random keep-rate in [0.6, 1.0], so that
no two synthetic cells are identical (cell sentences and graph neighbours are not trivial
copies of the source cells). Gene-text embeddings are cached before timing (the targets
assume cached gene embeddings); cell-sentence embeddings are computed, not cached.

Usage::

    python benchmarks/scale.py --cells 10000 100000 --threads 2 --sentence-cells 1000
    python benchmarks/scale.py --cells 10000 100000 --threads 2 --structural
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, DEFAULT_GENETEXT, RESULTS, measure  # noqa: E402


def resample(source, n_cells: int, random_state: int = 0, chunk: int = 50_000):
    """``n_cells`` cells resampled from ``source`` (AnnData of counts) with binomial thinning."""
    import anndata as ad

    rng = np.random.default_rng(random_state)
    X = sparse.csr_matrix(source.X)
    blocks = []
    for start in range(0, n_cells, chunk):
        m = min(chunk, n_cells - start)
        rows = rng.integers(0, X.shape[0], size=m)
        block = X[rows].astype(np.int64)
        keep = rng.uniform(0.6, 1.0, size=m)
        per_entry = np.repeat(keep, np.diff(block.indptr))
        block.data = rng.binomial(block.data, per_entry)
        block = sparse.csr_matrix(block, dtype=np.float32)
        block.eliminate_zeros()
        blocks.append(block)
    counts = sparse.vstack(blocks, format="csr")
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)])
    return ad.AnnData(X=counts, obs=obs, var=source.var[[]].copy())


def run_stages(adata, genetext: Path, sentence_cells: int | None, random_state: int = 0,
               n_clusters: int = 4, structural: bool = False):
    """Time each stage; Path 2 on all cells or, with ``sentence_cells``, on a sample of them
    (its throughput is then reported and the model uses Path 1 alone). ``structural``: no
    semantic view at all (graph, training and clustering only)."""
    import scllm_dsc as sd

    rows = []
    if structural:
        with measure() as p:
            sd.tl.cluster(adata, n_clusters=n_clusters, random_state=random_state,
                          use_semantic=False,
                          train_kwargs={"enable_progress_bar": False,
                                        "enable_model_summary": False})
        rows.append(("sd.tl.cluster (structural view only)", p))
        for stage, seconds in adata.uns["scllm_dsc"]["timings"].items():
            rows.append((f"  within cluster: {stage}",
                         type(p)(seconds=float(seconds), peak_mb=np.nan)))
        return rows
    with measure() as p:
        sd.tl.embed_genes(adata, knowledge=genetext / "human_gene_text.tsv.gz")
    rows.append(("gene-text cell embedding (Path 1, cached gene vectors)", p))
    n2 = adata.n_obs if sentence_cells is None else min(sentence_cells, adata.n_obs)
    sample = adata if n2 == adata.n_obs else adata[:n2].copy()
    import tempfile

    cache = sd.settings.cache_dir
    with tempfile.TemporaryDirectory() as empty, measure() as p:
        sd.settings.cache_dir = empty  # computed, never read from an earlier run's cache
        sd.tl.cell_sentences(sample)
    sd.settings.cache_dir = cache
    label = "cell sentences built and embedded (Path 2)"
    rows.append((label if n2 == adata.n_obs else f"{label}, {n2:,} cells: "
                 f"{n2 / p.seconds:.1f} cells/s", p))
    keys = ("X_gene_text", "X_cell_sentence") if n2 == adata.n_obs else ("X_gene_text",)
    with measure() as p:
        sd.tl.cluster(adata, n_clusters=n_clusters, random_state=random_state,
                      semantic_keys=keys,
                      train_kwargs={"enable_progress_bar": False, "enable_model_summary": False})
    rows.append((f"sd.tl.cluster (semantic view: {' + '.join(keys)})", p))
    for stage, seconds in adata.uns["scllm_dsc"]["timings"].items():
        rows.append((f"  within cluster: {stage}", type(p)(seconds=float(seconds), peak_mb=np.nan)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_DATA / "Kang_ctrl_PBMC_8684.h5ad")
    parser.add_argument("--genetext-dir", type=Path, default=DEFAULT_GENETEXT)
    parser.add_argument("--cells", nargs="+", type=int, default=[10_000, 100_000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentence-cells", type=int, default=None,
                        help="embed cell sentences of this many cells only and report their "
                             "throughput (the transformer pass dominates on CPU); the model "
                             "then uses Path 1 alone")
    parser.add_argument("--structural", action="store_true",
                        help="no semantic view: time graph, training and clustering only "
                             "(no gene-text cache needed)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.csv")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import anndata as ad
    import torch

    torch.set_num_threads(args.threads)
    source = ad.read_h5ad(args.source)
    source.obs = source.obs[[]]
    # warm the gene-text cache (not timed: the targets assume cached gene embeddings)
    import scllm_dsc as sd

    if not args.structural:
        sd.tl.embed_genes(source[:50].copy(),
                          knowledge=args.genetext_dir / "human_gene_text.tsv.gz")

    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    records = []
    for n in sorted(args.cells):
        adata = resample(source, n)
        with measure() as total:
            stages = run_stages(adata, args.genetext_dir, args.sentence_cells,
                                structural=args.structural)
        end = ("end to end", total)
        # the sampled Path 2 pass is not part of the run
        if args.sentence_cells is not None and not args.structural:
            used = [p for name, p in stages if "cells/s" not in name and "within" not in name]
            end = ("end to end (Path 1 semantic view)",
                   type(total)(sum(p.seconds for p in used), max(p.peak_mb for p in used)))
        for stage, probe in [*stages, end]:
            records.append({"cells": n, "stage": stage, "seconds": round(probe.seconds, 1),
                            "peak_mb_above_start": round(probe.peak_mb, 0),
                            # the process's peak so far (sizes run in increasing order)
                            "process_peak_mb": round(
                                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                            "device": device, "machine": machine})
            print(f"{n:>9,d}  {stage:58s} {probe.seconds:8.1f} s  {probe.peak_mb:8.0f} MB",
                  flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(records).to_csv(args.out, index=False)
    df = pd.DataFrame(records)
    md = df.to_markdown(index=False)
    args.out.with_suffix(".md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
