"""Clustering quality of scllm_dsc against the usual pipelines, with ablations.

Every method gets the true number of clusters where it takes one; labels are used for
scoring only. Writes ``results/quality.csv`` (one row per dataset x method x seed) and
``results/quality.md`` (mean and standard deviation over seeds).

Usage::

    python benchmarks/quality.py                       # all shared datasets, 3 seeds
    python benchmarks/quality.py --datasets Zheng_sortedPBMC_2140 --methods scanpy_leiden_k scllm_dsc
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DEFAULT_DATA,
    DEFAULT_GENETEXT,
    RESULTS,
    leiden_with_k,
    neighbors,
    log_normalised_pca,
    measure,
    scores,
    species_of,
)

DATASETS = [
    "Zheng_sortedPBMC_2140",
    "Baron_human_subset",
    "Kang_ctrl_PBMC_8684",
    "CellBench_CELseq2_5cl",
    "Pancreas_endocrinogenesis_739",
    "Zeisel_subset_1464",
    "PBMC68k_reduced_700",
]


# --------------------------------------------------------------------------- baselines
def scanpy_leiden(adata, k, seed, ctx):
    import scanpy as sc

    ad = ctx.pca(seed)
    neighbors(ad, n_neighbors=15, random_state=seed)
    sc.tl.leiden(ad, random_state=seed, flavor="igraph", n_iterations=2)
    return ad.obs["leiden"].to_numpy()


def scanpy_leiden_k(adata, k, seed, ctx):
    import scanpy as sc

    ad = ctx.pca(seed)
    neighbors(ad, n_neighbors=15, random_state=seed)
    return leiden_with_k(ad, k, random_state=seed)


def kmeans_pca(adata, k, seed, ctx):
    from sklearn.cluster import KMeans

    ad = ctx.pca(seed)
    return KMeans(k, n_init=10, random_state=seed).fit_predict(ad.obsm["X_pca"])


def scvi_leiden_k(adata, k, seed, ctx):
    import scanpy as sc
    import scvi

    scvi.settings.seed = seed
    ad = adata[:, ctx.hvg].copy()
    scvi.model.SCVI.setup_anndata(ad)
    model = scvi.model.SCVI(ad)
    model.train(max_epochs=ctx.scvi_epochs, accelerator="cpu", enable_progress_bar=False)
    ad.obsm["X_scVI"] = model.get_latent_representation()
    neighbors(ad, use_rep="X_scVI", n_neighbors=15, random_state=seed)
    return leiden_with_k(ad, k, random_state=seed)


def _embedding_leiden_k(key):
    def run(adata, k, seed, ctx):
        import anndata as ad_
        import scanpy as sc

        ctx.semantic()
        ad = ad_.AnnData(obs=pd.DataFrame(index=adata.obs_names))
        ad.obsm["X"] = adata.obsm[key]
        neighbors(ad, use_rep="X", n_neighbors=15, random_state=seed)  # unit vectors: euclidean ranks as cosine
        return leiden_with_k(ad, k, random_state=seed)

    return run


def _scllm(**kwargs):
    def run(adata, k, seed, ctx):
        import scllm_dsc as sd

        if kwargs.get("use_semantic", True):
            ctx.semantic()
        n_clusters = None if kwargs.get("auto") else k
        extra = {key: v for key, v in kwargs.items() if key != "auto"}
        ad = adata.copy()
        sd.tl.cluster(ad, n_clusters=n_clusters, random_state=seed, **extra)
        return ad.obs["scllm_dsc"].to_numpy()

    return run


METHODS = {
    "scanpy_leiden": scanpy_leiden,
    "scanpy_leiden_k": scanpy_leiden_k,
    "kmeans_pca": kmeans_pca,
    "scvi_leiden_k": scvi_leiden_k,
    "genept_w_leiden_k": _embedding_leiden_k("X_gene_text"),
    "c2s_leiden_k": _embedding_leiden_k("X_cell_sentence"),
    "scllm_dsc": _scllm(),
    "scllm_dsc_auto": _scllm(auto=True),
    "ablation_no_semantic": _scllm(use_semantic=False),
    "ablation_path1_only": _scllm(model_kwargs={"path_weight": 1.0}),
    "ablation_path2_only": _scllm(model_kwargs={"path_weight": 0.0}),
    "ablation_no_alignment": _scllm(model_kwargs={"w_align": 0.0}),
    "ablation_dec_target": _scllm(target="dec"),
}
DEFAULT_METHODS = [m for m in METHODS if m != "scvi_leiden_k"] + ["scvi_leiden_k"]


class Context:
    """Per-dataset lazily computed shared inputs (PCA, semantic embeddings)."""

    def __init__(self, adata, genetext: Path, scvi_epochs: int):
        self.adata = adata
        self.genetext = genetext
        self.scvi_epochs = scvi_epochs
        self._pca = {}
        self._semantic_done = False
        self.semantic_seconds = np.nan
        import scanpy as sc

        tmp = adata.copy()
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
        sc.pp.highly_variable_genes(tmp, n_top_genes=min(2000, tmp.n_vars))
        self.hvg = tmp.var_names[tmp.var["highly_variable"]]

    def pca(self, seed):
        if seed not in self._pca:
            self._pca[seed] = log_normalised_pca(self.adata, random_state=seed)
        return self._pca[seed].copy()

    def semantic(self):
        """Text embeddings once per dataset (cached on disk across runs by the package)."""
        if self._semantic_done:
            return
        import scllm_dsc as sd

        species = species_of(self.adata)
        table = self.genetext / f"{species}_gene_text.tsv.gz"
        with measure() as probe:
            sd.tl.embed_genes(self.adata, knowledge=table, species=species)
            sd.tl.cell_sentences(self.adata)
        self.semantic_seconds = probe.seconds
        self._semantic_done = True


def markdown_table(df: pd.DataFrame) -> str:
    agg = df.groupby(["dataset", "method"]).agg(
        ari=("ari", "mean"), ari_sd=("ari", "std"), nmi=("nmi", "mean"), acc=("acc", "mean"),
        n_found=("n_found", "mean"), seconds=("seconds", "mean"), peak_mb=("peak_mb", "max"),
    )
    lines = []
    ari = agg["ari"].unstack("dataset")
    ari["mean"] = ari.mean(axis=1)
    ari = ari.sort_values("mean", ascending=False)
    lines.append("### Mean ARI over seeds (columns: datasets; last column: mean over datasets)\n")
    lines.append(ari.round(3).to_markdown())
    lines.append("\n### All metrics (mean over seeds; ari_sd is the spread over seeds)\n")
    lines.append(agg.round(3).to_markdown())
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--genetext-dir", type=Path, default=DEFAULT_GENETEXT)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--scvi-epochs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.csv")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import anndata as ad
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        adata = ad.read_h5ad(args.data_dir / f"{name}.h5ad")
        truth = adata.obs["cell_type"].astype(str).to_numpy()
        k = len(np.unique(truth))
        adata.obs = adata.obs[[]]  # nothing but the counts reaches the methods
        ctx = Context(adata, args.genetext_dir, args.scvi_epochs)
        for method in args.methods:
            for seed in args.seeds:
                with measure() as probe:
                    labels = METHODS[method](adata, k, seed, ctx)
                row = {"dataset": name, "method": method, "seed": seed, "k": k,
                       **scores(truth, labels), "seconds": probe.seconds,
                       "peak_mb": probe.peak_mb, "threads": args.threads}
                rows.append(row)
                print(f"{name:32s} {method:24s} seed {seed}  ARI {row['ari']:.3f}  "
                      f"NMI {row['nmi']:.3f}  {row['seconds']:.1f}s", flush=True)
                pd.DataFrame(rows).to_csv(args.out, index=False)
        if ctx._semantic_done:
            print(f"{name}: text embeddings took {ctx.semantic_seconds:.1f}s", flush=True)
    df = pd.DataFrame(rows)
    md = markdown_table(df)
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
