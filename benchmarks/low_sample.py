"""Low-sample cell-type annotation: label transfer from 20 labelled cells per type.

For each dataset and seed, a labelled reference of up to 20 cells per type is sampled (seeded;
a type with fewer than 40 cells gives half of its cells, so that every type keeps query
cells); all other cells form the query. Query cells are annotated by distance-weighted
cosine 15-NN voting (``sd.tl.transfer_labels``) in four representations:

a. ``pca``: PCA of log-normalised HVGs (scanpy: normalize_total 1e4, log1p, 2000 HVGs,
   PCA 50; computed on all cells, label-free);
b. ``gene_text``: the raw gene-text embedding ``obsm["X_gene_text"]``;
c. ``refined_supervised``: ``sd.tl.refine_embedding(reference, labels="cell_type",
   apply_to=[query])`` (SupCon + NT-Xent, trained on the reference only);
d. ``refined_self``: ``sd.tl.refine_embedding`` without labels on all cells (NT-Xent).

Scores: accuracy and macro-F1 on the query cells, mean ± sd over seeds. By default
``X_gene_text`` is computed with ``sd.tl.embed_genes`` and the shared gene-text table;
``--semantic-cache DIR`` loads ``DIR/{dataset}_sem.npz`` (key ``X_gene_text``, rows aligned
with the h5ad) instead.

Usage (CPU, one thread)::

    python benchmarks/low_sample.py --semantic-cache /work/cache --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DEFAULT_DATA,
    DEFAULT_GENETEXT,
    RESULTS,
    log_normalised_pca,
    species_of,
)

DATASETS = ["Zheng_sortedPBMC_2140", "Baron_human_subset", "Kang_ctrl_PBMC_8684"]
METHODS = {
    "pca": "(a) kNN on PCA of log-normalised HVGs",
    "gene_text": "(b) kNN on raw X_gene_text",
    "refined_supervised": "(c) supervised refinement (reference labels)",
    "refined_self": "(d) self-supervised refinement (all cells)",
}


def sample_reference(labels: np.ndarray, n_per_type: int, seed: int) -> np.ndarray:
    """Boolean mask of the reference: ``min(n_per_type, n // 2)`` cells per type (>= 1)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for t in np.unique(labels):
        idx = np.flatnonzero(labels == t)
        k = min(n_per_type, max(1, len(idx) // 2))
        mask[rng.choice(idx, k, replace=False)] = True
    return mask


def gene_text(adata, name: str, args) -> np.ndarray:
    if args.semantic_cache is not None:
        X = np.load(Path(args.semantic_cache) / f"{name}_sem.npz")["X_gene_text"]
        if X.shape[0] != adata.n_obs:
            raise ValueError(f"{name}: cached X_gene_text has {X.shape[0]} rows, not {adata.n_obs}")
        return np.asarray(X, dtype=np.float32)
    import scllm_dsc as sd

    species = species_of(adata)
    work = adata.copy()
    sd.tl.embed_genes(work, knowledge=Path(args.genetext) / f"{species}_gene_text.tsv.gz",
                      species=species)
    return np.asarray(work.obsm["X_gene_text"], dtype=np.float32)


def score(query, key: str) -> dict[str, float]:
    from sklearn.metrics import f1_score

    truth = query.obs["cell_type"].astype(str).to_numpy()
    pred = query.obs[key].astype(str).to_numpy()
    return {"acc": float((truth == pred).mean()),
            "macro_f1": float(f1_score(truth, pred, average="macro", zero_division=0))}


def run_dataset(name: str, args) -> list[dict]:
    import anndata as ad

    import scllm_dsc as sd

    adata = ad.read_h5ad(Path(args.data) / f"{name}.h5ad")
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str).astype("category")
    labels = adata.obs["cell_type"].to_numpy().astype(str)
    t0 = time.perf_counter()
    adata.obsm["X_gene_text"] = gene_text(adata, name, args)
    t_text = time.perf_counter() - t0
    t0 = time.perf_counter()
    adata.obsm["X_pca"] = log_normalised_pca(adata, random_state=0).obsm["X_pca"]
    t_pca = time.perf_counter() - t0
    slim = ad.AnnData(obs=adata.obs[["cell_type"]].copy(), obsm=dict(adata.obsm))
    rows = []
    for seed in args.seeds:
        is_ref = sample_reference(labels, args.n_per_type, seed)
        ref, query = slim[is_ref].copy(), slim[~is_ref].copy()
        timings = {"pca": t_pca, "gene_text": t_text}
        t0 = time.perf_counter()
        sd.tl.refine_embedding(ref, labels="cell_type", apply_to=[query], random_state=seed,
                               key_added="X_sup")
        timings["refined_supervised"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        everyone = slim.copy()
        sd.tl.refine_embedding(everyone, random_state=seed, key_added="X_self")
        ref.obsm["X_self"] = everyone.obsm["X_self"][is_ref]
        query.obsm["X_self"] = everyone.obsm["X_self"][~is_ref]
        timings["refined_self"] = time.perf_counter() - t0
        reps = {"pca": "X_pca", "gene_text": "X_gene_text", "refined_supervised": "X_sup",
                "refined_self": "X_self"}
        for method, rep in reps.items():
            sd.tl.transfer_labels(ref, query, "cell_type", use_rep=rep,
                                  n_neighbors=args.n_neighbors, key_added="pred")
            row = {"dataset": name, "seed": seed, "method": method, "n_ref": int(is_ref.sum()),
                   "n_query": int((~is_ref).sum()), "n_types": int(len(np.unique(labels))),
                   **score(query, "pred"), "seconds": timings[method]}
            rows.append(row)
            print(f"{name:24s} seed {seed}  {method:20s} acc {row['acc']:.3f}  "
                  f"macro-F1 {row['macro_f1']:.3f}  ({row['seconds']:.1f}s)", flush=True)
    return rows


def to_markdown(df: pd.DataFrame, command: str) -> str:
    seeds = sorted(df["seed"].unique())
    lines = [
        "# Low-sample annotation: label transfer from 20 labelled cells per type",
        "",
        f"Command: `{command}`",
        "",
        f"Reference: up to 20 labelled cells per type (seeded; half of a type with fewer than "
        f"40 cells); query: all other cells. Distance-weighted cosine 15-NN voting "
        f"(`sd.tl.transfer_labels`) in each representation. Mean ± sd over seeds "
        f"{', '.join(map(str, seeds))}.",
        "",
    ]
    for metric, title in (("acc", "Query accuracy"), ("macro_f1", "Query macro-F1")):
        agg = df.groupby(["dataset", "method"], sort=False)[metric].agg(["mean", "std"])
        table = pd.DataFrame(index=list(METHODS.values()))
        for name in df["dataset"].unique():
            table[name] = [f"{agg.loc[(name, m), 'mean']:.3f} ± {agg.loc[(name, m), 'std']:.3f}"
                           for m in METHODS]
        mean = df.groupby(["method", "seed"])[metric].mean().groupby("method")
        table["mean over datasets"] = [f"{mean.mean()[m]:.3f} ± {mean.std()[m]:.3f}"
                                       for m in METHODS]
        lines += [f"## {title}", "", table.rename_axis("method").to_markdown(), ""]
    info = df.groupby("dataset", sort=False)[["n_ref", "n_query", "n_types"]].first()
    secs = df.pivot_table(index="dataset", columns="method", values="seconds", sort=False)
    lines += ["## Cells and time", "", info.join(secs[list(METHODS)].round(1)).to_markdown(),
              "", "Seconds to compute each representation, mean over seeds (PCA and `X_gene_text` "
              "are computed once per dataset; `X_gene_text` from `--semantic-cache` is a file "
              "read).", ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n-per-type", type=int, default=20)
    p.add_argument("--n-neighbors", type=int, default=15)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder of the .h5ad datasets")
    p.add_argument("--genetext", default=str(DEFAULT_GENETEXT),
                   help="folder of {species}_gene_text.tsv.gz (without --semantic-cache)")
    p.add_argument("--semantic-cache", default=None, metavar="DIR",
                   help="load X_gene_text from DIR/{dataset}_sem.npz instead of embedding genes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "low_sample.csv")
    args = p.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    rows = []
    with threadpool_limits(args.threads):
        for name in args.datasets:
            rows += run_dataset(name, args)
            pd.DataFrame(rows).to_csv(args.out, index=False)
    df = pd.DataFrame(rows)
    command = f"python benchmarks/low_sample.py {' '.join(sys.argv[1:] if argv is None else argv)}"
    md = to_markdown(df, command.rstrip())
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
