"""Held-out cells mapped onto a trained model: how much of the disagreement with a model
trained on all cells is the mapping, and how much is run-to-run clustering stability.

The split and the models are those of ``tests/test_query.py::
test_zheng_holdout_agrees_with_all_cells`` (structural view, true k, seed 0), plus a second
all-cells model with seed 1. Labels are used only to report ARI.

Usage::

    python benchmarks/query_agreement.py [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="Zheng_sortedPBMC_2140")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hvg", type=int, default=None,
                   help="keep only this many highly variable genes (of all cells) first, as "
                        "sd.tl.cluster trains on its highly variable genes")
    args = p.parse_args(argv)

    import anndata as ad
    import torch
    from sklearn.metrics import adjusted_rand_score as ari

    import scllm_dsc as sd

    torch.set_num_threads(args.threads)
    full = ad.read_h5ad(DEFAULT_DATA / f"{args.dataset}.h5ad")
    truth = full.obs["cell_type"].to_numpy()
    k = full.obs["cell_type"].nunique()
    full.obs = full.obs[[]]
    if args.hvg:
        import scanpy as sc

        tmp = full.copy()
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
        sc.pp.highly_variable_genes(tmp, n_top_genes=args.hvg, flavor="seurat")
        full = full[:, tmp.var["highly_variable"].to_numpy()].copy()
    rng = np.random.default_rng(0)
    test = np.zeros(full.n_obs, dtype=bool)
    test[rng.choice(full.n_obs, full.n_obs // 5, replace=False)] = True

    def fit(adata, seed):
        torch.manual_seed(seed)
        sd.model.SCLLMDSC.setup_anndata(adata, semantic_keys=None)
        m = sd.model.SCLLMDSC(adata, n_clusters=k)
        m.train(random_state=seed, enable_progress_bar=False)
        return m

    all0 = fit(full.copy(), 0).predict()
    all1 = fit(full.copy(), 1).predict()
    ref = fit(full[~test].copy(), 0)
    ref_labels = ref.predict()
    with tempfile.TemporaryDirectory() as d:
        ref.save(d, overwrite=True, save_anndata=False)
        mapped = sd.model.SCLLMDSC.load(d, adata=full[test].copy()).predict()
    rows = [
        ("all cells seed 0 vs all cells seed 1 (all cells)", ari(all0, all1)),
        ("the same, on the held-out cells", ari(all0[test], all1[test])),
        ("80% model on its training cells vs all-cells seed 0", ari(all0[~test], ref_labels)),
        ("80% model, mapped held-out cells vs all-cells seed 0", ari(all0[test], mapped)),
        ("truth: all-cells seed 0", ari(truth, all0)),
        ("truth: all-cells seed 1", ari(truth, all1)),
        ("truth: 80% model, training cells", ari(truth[~test], ref_labels)),
        ("truth: 80% model, mapped cells", ari(truth[test], mapped)),
    ]
    print("| comparison | ARI |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.3f} |")


if __name__ == "__main__":
    main()
