"""Time of a first ``sd.tl.embed_genes`` call (empty cache, shipped knowledge and vectors)
next to scanpy's standard pipeline on the same data, in the same process.

The package caches live in a fresh temporary folder (``SCLLM_DSC_CACHE``) and
``SCLLM_DSC_DATA`` is unset, so the call reads the knowledge shipped in the package and
embeds only the texts without a shipped vector. Scanpy's pipeline: ``normalize_total``,
``log1p``, ``highly_variable_genes`` (2000), ``pca`` (50), ``neighbors`` (15), ``leiden``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/first_call.py Zheng_sortedPBMC_2140 \\
        Baron_human_subset --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA  # noqa: E402


def scanpy_pipeline(adata) -> float:
    import scanpy as sc

    t0 = time.perf_counter()
    a = adata.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=2000)
    sc.pp.pca(a, n_comps=50, mask_var="highly_variable")
    sc.pp.neighbors(a, n_neighbors=15)
    sc.tl.leiden(a, flavor="igraph", n_iterations=2)
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="+")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    os.environ.pop("SCLLM_DSC_DATA", None)
    os.environ["SCLLM_DSC_CACHE"] = tempfile.mkdtemp(prefix="scllm-first-call-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import anndata as ad
    import torch

    torch.set_num_threads(args.threads)
    import scllm_dsc as sd

    print(f"cache: {sd.settings.cache_dir} (empty); knowledge: {sd.settings.knowledge_dir}")
    print("dataset | cells | genes | with text | from shipped vectors | embedded | "
          "embed_genes s | scanpy pipeline s")
    for name in args.datasets:
        adata = ad.read_h5ad(args.data_dir / f"{name}.h5ad")
        t0 = time.perf_counter()
        sd.tl.embed_genes(adata)
        t_embed = time.perf_counter() - t0
        enc = sd.encoders.get_encoder()
        shipped = enc.stats["shipped"]
        embedded = enc.stats["embedded"]
        enc.stats.update(shipped=0, embedded=0)
        t_scanpy = scanpy_pipeline(adata)
        n_found = adata.uns["gene_text"]["params"]["n_found"]
        print(f"{name} | {adata.n_obs} | {adata.n_vars} | {n_found} | {shipped} | {embedded} | "
              f"{t_embed:.1f} | {t_scanpy:.1f}", flush=True)


if __name__ == "__main__":
    main()
