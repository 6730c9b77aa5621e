"""Graph, training and clustering of N resampled cells on one device, stage by stage.

Cells are resampled with binomial thinning from a real dataset (as ``scale.py`` does;
default Kang_ctrl_PBMC_8684 under ``../shared``) or, with ``--source synthetic``, drawn
from a Poisson mixture, so the script also runs where the shared data is absent. The model
is the structural view (no semantic embeddings: those are a separate, cached step). Each
stage prints its wall time, the process's peak resident host memory so far and, on CUDA,
the stage's peak allocated device memory.

Usage::

    python benchmarks/gpu_scale.py                            # 1M cells on cuda
    python benchmarks/gpu_scale.py --cells 5000 --device cpu  # a small check on CPU
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA  # noqa: E402


def synthetic_source(n_cells: int = 5000, n_genes: int = 3000, k: int = 8, seed: int = 0):
    """Poisson counts of ``k`` groups (each with 60 up-regulated genes)."""
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    rng = np.random.default_rng(seed)
    groups = rng.integers(0, k, n_cells)
    base = rng.gamma(0.3, 1.0, n_genes)
    mu = np.tile(base, (k, 1))
    for g in range(k):
        mu[g, rng.choice(n_genes, 60, replace=False)] *= 10.0
    lib = rng.lognormal(0.0, 0.3, n_cells)[:, None]
    X = sparse.csr_matrix(rng.poisson(mu[groups] * lib).astype(np.float32))
    return ad.AnnData(X=X, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


def peak_host_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stage:
    """Wall time, peak host RSS so far and the stage's peak CUDA memory."""

    def __init__(self, name: str, cuda: bool):
        self.name, self.cuda = name, cuda

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0
        cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else float("nan")
        print(f"{self.name:28s} {self.seconds:9.1f} s   host peak {peak_host_mb():9.0f} MB   "
              f"cuda peak {cuda_mb:9.0f} MB", flush=True)
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--device", default="cuda", help="'cuda' or 'cpu'")
    parser.add_argument("--source", default=str(DEFAULT_DATA / "Kang_ctrl_PBMC_8684.h5ad"),
                        help="an .h5ad of raw counts, or 'synthetic'")
    parser.add_argument("--n-clusters", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and kNN-search threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible; pass --device cpu")

    import anndata as ad
    import scanpy as sc
    import scvi
    from scale import resample

    import scllm_dsc as sd

    sc.settings.n_jobs = threads
    scvi.settings.verbosity = 30
    accelerator = "gpu" if cuda else "cpu"
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"{args.cells:,} cells, device {name}, {threads} threads, batch {args.batch_size}")
    with Stage("resample", False):
        source = (synthetic_source(seed=args.seed) if args.source == "synthetic"
                  else ad.read_h5ad(args.source))
        source.obs = source.obs[[]]
        adata = resample(source, args.cells, random_state=args.seed)
    total = time.perf_counter()
    with Stage("graph (HVG, PCA, kNN, SIGN)", False):
        sd.model.SCLLMDSC.setup_anndata(adata, semantic_keys=None, random_state=args.seed)
    with Stage("training", cuda):
        torch.manual_seed(args.seed)
        model = sd.model.SCLLMDSC(adata, n_clusters=args.n_clusters)
        model.train(batch_size=args.batch_size, accelerator=accelerator, devices=1,
                    random_state=args.seed, enable_progress_bar=False,
                    enable_model_summary=False)
    with Stage("clustering (latent, predict)", cuda):
        latent = model.get_latent_representation(batch_size=8192)
        labels = model.predict(batch_size=8192)
    total = time.perf_counter() - total
    sizes = np.bincount(labels, minlength=args.n_clusters)
    print(f"{'graph + training + clustering':28s} {total:9.1f} s   host peak "
          f"{peak_host_mb():9.0f} MB   latent {latent.shape}, cluster sizes {sizes.tolist()}")


if __name__ == "__main__":
    main()
