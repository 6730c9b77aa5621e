"""Measure the semantic-view options: 5-fold cross-validated 15-NN accuracy on cell types.

Path 1 (``sd.tl.embed_genes``) variants: raw MiniLM gene vectors, centred, centred + top
principal direction removed, + IDF gene weights, and the random-gene-vector control.
Path 2 (``sd.tl.cell_sentences``): sentences ranked by expression vs by specificity.

Usage (CPU, one thread, shared embedding cache)::

    OMP_NUM_THREADS=1 SCLLM_DSC_CACHE=/work/cache PYTHONPATH=src \\
        python benchmarks/semantic_view.py --datasets Zheng_sortedPBMC_2140 Kang_ctrl_PBMC_8684 \\
        --sentence-cells 600

Labels are used for evaluation only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

import scllm_dsc as sd
from scllm_dsc._utils import get_matrix, l2_normalize
from scllm_dsc.tl._embed_genes import cell_text_weights, process_gene_vectors
from scllm_dsc.tl._semantic import check_expression, gene_stats, idf_weights

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def knn_accuracy(Z, labels, seed=0) -> float:
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    clf = KNeighborsClassifier(15, metric="cosine")
    return float(cross_val_score(clf, Z, labels, cv=cv).mean())


def path1_variants(adata, seed=0) -> dict[str, np.ndarray]:
    X = get_matrix(adata)
    is_counts = check_expression(X, None)
    found = adata.var["gene_text_found"].to_numpy()
    idx = np.flatnonzero(found)
    G = adata.varm["gene_text"][idx]
    _, frac = gene_stats(X, is_counts)
    idf = idf_weights(frac[idx], X.shape[0])
    K = adata.uns["gene_text"]["params"]["n_top_genes"]
    W = cell_text_weights(X, idx, K, is_counts=is_counts)
    Wi = cell_text_weights(X, idx, K, is_counts=is_counts, gene_weight=idf)
    rng = np.random.default_rng(seed)
    R = l2_normalize(rng.standard_normal(G.shape))
    out = {}
    out["raw"] = W @ G
    out["centred"] = W @ process_gene_vectors(G, center=True, n_remove_pcs=0)[0]
    for k in (1, 3):
        Gp = process_gene_vectors(G, center=True, n_remove_pcs=k)[0]
        out[f"centred+pc{k}"] = W @ Gp
        out[f"centred+pc{k}+idf"] = Wi @ Gp
    out["raw+idf"] = Wi @ G
    out["random"] = W @ R
    out["random+idf"] = Wi @ R
    return {k: l2_normalize(np.asarray(v)) for k, v in out.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+",
                   default=["Zheng_sortedPBMC_2140", "Baron_human_subset", "Kang_ctrl_PBMC_8684"])
    p.add_argument("--sentence-cells", type=int, default=600,
                   help="cells per dataset for the (slow) sentence embeddings; 0 skips Path 2")
    p.add_argument("--n-genes", type=int, default=100)
    args = p.parse_args()
    knowledge = DATA / "genetext" / "human_gene_text.tsv.gz"
    rows = []
    for name in args.datasets:
        adata = ad.read_h5ad(DATA / "datasets" / f"{name}.h5ad")
        labels = adata.obs["cell_type"].astype(str).to_numpy()
        sd.tl.embed_genes(adata, knowledge)
        cov = adata.uns["gene_text"]["params"]["coverage_expressed"]
        print(f"{name}: {adata.n_obs} cells, coverage of expressed genes {cov:.3f}", flush=True)
        for variant, Z in path1_variants(adata).items():
            rows.append((name, "path1", variant, adata.n_obs, knn_accuracy(Z, labels)))
        if args.sentence_cells:
            rng = np.random.default_rng(0)
            n = min(args.sentence_cells, adata.n_obs)
            sub = adata[np.sort(rng.choice(adata.n_obs, n, replace=False))].copy()
            sl = sub.obs["cell_type"].astype(str).to_numpy()
            rows.append((name, "path1", "default (same cells as path2)", n,
                         knn_accuracy(sub.obsm["X_gene_text"], sl)))
            for rank_by in ("expression", "specificity"):
                sd.tl.cell_sentences(sub, args.n_genes, rank_by=rank_by)
                rows.append((name, "path2", f"rank_by={rank_by}", n,
                             knn_accuracy(sub.obsm["X_cell_sentence"], sl)))
        df = pd.DataFrame(rows, columns=["dataset", "path", "variant", "n_cells", "knn15_acc"])
        print(df[df.dataset == name].to_string(index=False), flush=True)
    df = pd.DataFrame(rows, columns=["dataset", "path", "variant", "n_cells", "knn15_acc"])
    table = df.pivot_table(index=["path", "variant"], columns="dataset", values="knn15_acc",
                           sort=False)
    table["mean"] = table.mean(1)
    print("\n5-fold CV 15-NN accuracy (cosine) on obs['cell_type']")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
