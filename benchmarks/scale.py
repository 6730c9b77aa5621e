"""Speed and memory of each stage on synthetic data resampled from real cells.

Cells are drawn with replacement from a real dataset (default Kang_ctrl_PBMC_8684) and each
drawn cell's counts are binomially thinned with a random keep-rate in [0.6, 1.0], so that
no two synthetic cells are identical (cell sentences and graph neighbours are not trivial
copies of the source cells). Gene-text embeddings are cached before timing (the targets
assume cached gene embeddings); cell-sentence embeddings are computed, not cached.

Usage::

    python benchmarks/scale.py --cells 10000 100000 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
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


def run_stages(adata, genetext: Path, random_state: int = 0, n_clusters: int = 4):
    import scllm_dsc as sd

    rows = []
    with measure() as p:
        sd.tl.embed_genes(adata, knowledge=genetext / "human_gene_text.tsv.gz")
    rows.append(("gene-text cell embedding (Path 1, cached gene vectors)", p))
    with measure() as p:
        sd.tl.cell_sentences(adata)
    rows.append(("cell sentences built and embedded (Path 2)", p))
    with measure() as p:
        sd.tl.cluster(adata, n_clusters=n_clusters, random_state=random_state)
    rows.append(("sd.tl.cluster (graph, training, clustering)", p))
    timings = adata.uns.get("scllm_dsc", {}).get("timings", {})
    for stage, seconds in timings.items():
        rows.append((f"  within cluster: {stage}", type(p)(seconds=float(seconds), peak_mb=np.nan)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_DATA / "Kang_ctrl_PBMC_8684.h5ad")
    parser.add_argument("--genetext-dir", type=Path, default=DEFAULT_GENETEXT)
    parser.add_argument("--cells", nargs="+", type=int, default=[10_000, 100_000])
    parser.add_argument("--threads", type=int, default=2)
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

    sd.tl.embed_genes(source[:50].copy(), knowledge=args.genetext_dir / "human_gene_text.tsv.gz")

    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    records = []
    for n in args.cells:
        adata = resample(source, n)
        with measure() as total:
            stages = run_stages(adata, args.genetext_dir)
        for stage, probe in [*stages, ("end to end", total)]:
            records.append({"cells": n, "stage": stage, "seconds": round(probe.seconds, 1),
                            "peak_mb_above_start": round(probe.peak_mb, 0),
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
