"""Throughput of ``sd.tl.cell_sentences`` (cells/s) by thread count, float32 vs dynamic int8.

Embeds the sentences (top 100 genes) of ``--n-cells`` cells drawn at random from a dataset
with an empty embedding cache per run; the model is loaded before the clock starts. Reports
cells/s of wall time and of process CPU time (on a machine shared with other jobs the
CPU-time rate is what one uncontended thread would give) and, for int8, the cosine of each
cell's embedding to the float32 one.

Usage::

    python benchmarks/cell_sentences_speed.py Zheng_sortedPBMC_2140 --n-cells 300 \\
        --threads 1 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--n-cells", type=int, default=300)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import anndata as ad
    import torch

    import scllm_dsc as sd

    adata = ad.read_h5ad(args.data_dir / f"{args.dataset}.h5ad")
    rng = np.random.default_rng(0)
    adata = adata[np.sort(rng.choice(adata.n_obs, args.n_cells, replace=False))].copy()
    ref = None
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    print("threads | weights | cells/s (wall) | cells per CPU-s | tokens/cell | chunks/cell "
          "| min / mean cosine to fp32")
    for quantize in (False, True):
        for threads in args.threads:
            torch.set_num_threads(threads)
            sd.settings.cache_dir = tempfile.mkdtemp(prefix="scllm-c2s-")
            sd.encoders.clear_encoders()
            enc = sd.encoders.get_encoder(batch_size=args.batch_size, quantize=quantize)
            enc._load()
            a = adata.copy()
            t0, c0 = time.perf_counter(), time.process_time()
            sd.tl.cell_sentences(a, batch_size=args.batch_size, quantize=quantize)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            Z = a.obsm["X_cell_sentence"]
            chunks = [enc.chunk_ids(s) for s in a.obs["cell_sentence"][:50]]
            n_tok = np.mean([sum(len(c) for c in cs) for cs in chunks])
            n_chunks = np.mean([len(cs) for cs in chunks])
            if ref is None:
                ref = Z
            cos = (Z * ref).sum(1)
            weights = "int8" if quantize else "float32"
            print(f"{threads} | {weights} | {a.n_obs / dt:.1f} | {a.n_obs / dc:.1f} | "
                  f"{n_tok:.0f} | {n_chunks:.1f} | {cos.min():.4f} / {cos.mean():.4f}",
                  flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
