"""Helpers shared by the benchmark scripts: data paths, metrics, time and memory probes."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "datasets"
DEFAULT_GENETEXT = REPO.parent / "shared" / "data" / "genetext"
RESULTS = REPO / "benchmarks" / "results"


def species_of(adata) -> str:
    names = adata.var_names[:200]
    upper = np.mean([n.isupper() or not n.isalpha() for n in names])
    return "human" if upper > 0.5 else "mouse"


def cluster_accuracy(y_true, y_pred) -> float:
    """Best one-to-one matching accuracy between two labelings (Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment

    t = np.unique(y_true, return_inverse=True)[1]
    p = np.unique(y_pred, return_inverse=True)[1]
    cont = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(cont, (p, t), 1)
    rows, cols = linear_sum_assignment(-cont)
    return float(cont[rows, cols].sum() / len(t))


def scores(y_true, y_pred) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "acc": cluster_accuracy(np.asarray(y_true), np.asarray(y_pred)),
        "n_found": int(len(np.unique(y_pred))),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Probe:
    seconds: float = 0.0
    peak_mb: float = 0.0


@contextmanager
def measure(interval: float = 0.02):
    """Wall time and peak resident memory above the starting level (sampled)."""
    probe = Probe()
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        yield probe
    finally:
        probe.seconds = time.perf_counter() - t0
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())
        probe.peak_mb = (peak[0] - base) / 2**20


def neighbors(ad, n_neighbors: int = 15, random_state: int = 0, use_rep: str = "X_pca"):
    """``sc.pp.neighbors`` through the package's wrapper, which works above 4,096 cells."""
    from scllm_dsc.graph import neighbors as _neighbors

    _neighbors(ad, n_neighbors=n_neighbors, use_rep=use_rep, random_state=random_state)


def log_normalised_pca(
    adata, n_top_genes: int = 2000, n_comps: int = 50, random_state: int = 0, scale: bool = False
):
    """scanpy's pipeline up to PCA on a copy (normalize_total, log1p, HVG, [scale], PCA)."""
    import scanpy as sc

    ad = adata.copy()
    sc.pp.filter_genes(ad, min_cells=1)
    sc.pp.normalize_total(ad, target_sum=1e4)
    sc.pp.log1p(ad)
    sc.pp.highly_variable_genes(ad, n_top_genes=min(n_top_genes, ad.n_vars))
    ad = ad[:, ad.var["highly_variable"]].copy()
    if scale:
        sc.pp.scale(ad, max_value=10)
    sc.pp.pca(ad, n_comps=min(n_comps, ad.n_vars - 1, ad.n_obs - 1), random_state=random_state)
    return ad


def quiet_training(threads: int) -> None:
    """Silence Lightning / scvi-tools chatter and set torch's thread count."""
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(threads)


def load_labelled(data_dir: Path, name: str, semantic_cache: Path | None = None):
    """A shared dataset with its labels taken out: ``(adata, truth)``.

    With ``semantic_cache``, ``obsm`` gets the arrays of ``{semantic_cache}/{name}_sem.npz``
    (``X_gene_text``, ``X_cell_sentence``, rows in the order of the h5ad).
    """
    import anndata as ad

    adata = ad.read_h5ad(Path(data_dir) / f"{name}.h5ad")
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    adata.obs = adata.obs[[]]
    if semantic_cache is not None:
        cached = np.load(Path(semantic_cache) / f"{name}_sem.npz")
        for key in cached.files:
            adata.obsm[key] = cached[key]
    return adata, truth
