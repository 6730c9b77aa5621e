"""How often does ``sd.tl.annotate_clusters`` suggest the right cell type?

For each shared dataset whose labels map to the Cell Ontology (``cell_ontology_map.csv``;
CellBench's cancer cell lines have no CL type and are skipped):

1. cells are grouped into k clusters (k = the number of true labels) by ``--grouping``:
   ``leiden`` (k-matched Leiden on PCA of log-normalised HVGs, label-free; the default while
   ``sd.tl.cluster`` is not available), ``scllm_dsc`` (``sd.tl.cluster`` with the true k)
   or ``truth`` (the true labels themselves, an upper bound on the grouping);
2. each cluster's reference is the CL term of its majority true label;
3. suggestions are ranked among Cell Ontology candidates: the dataset's tissue preset
   (``within=`` "immune", "pancreas" or "brain") and, with ``--all-cl``, all CL terms;
4. top-1 / top-3 accuracy over clusters, ``exact`` (suggested term = reference term) and
   ``near`` (the term, or a direct parent or child of it, in the Cell Ontology).

Methods: ``markers+centroid`` (default), ``centroid`` (``use_markers=False``), ``markers``
(``marker_weight=1``) and the ``name-overlap`` baseline: a candidate scores the rank weights
of the cluster's marker genes whose symbols appear as words in its text (label, synonyms,
definition); ties (mostly all zero) fall to candidate order, i.e. CL id.

Usage::

    python benchmarks/annotation.py            # writes results/annotation.md and .csv
    python benchmarks/annotation.py --datasets PBMC68k_reduced_700 --grouping truth
"""

from __future__ import annotations

import argparse
import re
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

HERE = Path(__file__).resolve().parent
PRESET = {
    "Baron_human_subset": "pancreas",
    "Kang_ctrl_PBMC_8684": "immune",
    "PBMC68k_reduced_700": "immune",
    "Zheng_sortedPBMC_2140": "immune",
    "Pancreas_endocrinogenesis_739": "pancreas",
    "Zeisel_subset_1464": "brain",
}


def group_cells(adata, k: int, how: str, seed: int = 0) -> np.ndarray:
    if how == "truth":
        return adata.obs["cell_type"].astype(str).to_numpy()
    if how == "leiden":
        from scllm_dsc.graph import leiden_n_clusters

        ad = log_normalised_pca(adata, random_state=seed)
        return leiden_n_clusters(ad.obsm["X_pca"], k, random_state=seed).astype(str)
    if how == "scllm_dsc":
        import scllm_dsc as sd

        ad = adata.copy()
        sd.tl.cluster(ad, n_clusters=k, random_state=seed)
        return ad.obs["scllm_dsc"].astype(str).to_numpy()
    raise ValueError(how)


def name_overlap_ranking(markers: dict[str, list[str]], cand: pd.DataFrame) -> dict[str, list[int]]:
    """Baseline: rank candidates by the rank-weighted count of marker symbols in their text."""
    from scllm_dsc.tl._annotate import _rank_weights

    words = [set(re.findall(r"[A-Za-z0-9][A-Za-z0-9\-]*", t.upper())) for t in cand["text"]]
    out = {}
    for g, genes in markers.items():
        w = _rank_weights(len(genes)) if genes else np.zeros(0)
        score = np.zeros(len(cand))
        for gw, gene in zip(w, genes, strict=True):
            up = gene.upper()
            score += gw * np.array([up in ws for ws in words])
        out[g] = list(np.argsort(-score, kind="stable")[:3])
    return out


def hits(ranked_ids: list[str], ref: str, parser) -> dict[str, bool]:
    near = {ref, *parser.get_term_parents(ref), *parser.get_term_children(ref)}
    return {
        "top1_exact": ranked_ids[:1] == [ref],
        "top3_exact": ref in ranked_ids[:3],
        "top1_near": bool(ranked_ids[:1]) and ranked_ids[0] in near,
        "top3_near": any(t in near for t in ranked_ids[:3]),
    }


def run_dataset(name: str, args, cmap: pd.DataFrame, parser) -> list[dict]:
    import anndata as ad

    import scllm_dsc as sd
    from scllm_dsc.tl._annotate import annotate_clusters
    from scllm_dsc.tl._candidates import ontology_candidates

    adata = ad.read_h5ad(Path(args.data) / f"{name}.h5ad")
    if args.min_cells > 0:  # fewer genes to embed on a CPU (label-free)
        import scanpy as sc

        sc.pp.filter_genes(adata, min_cells=args.min_cells)
    m = cmap[cmap["dataset"] == name].set_index("label")["term_id"]
    k = adata.obs["cell_type"].nunique()
    species = species_of(adata)
    sd.tl.embed_genes(adata, knowledge=Path(args.genetext) / f"{species}_gene_text.tsv.gz",
                      species=species)
    adata.obs["_group"] = pd.Categorical(group_cells(adata, k, args.grouping))
    majority = (
        adata.obs.groupby("_group", observed=True)["cell_type"]
        .agg(lambda s: s.astype(str).value_counts().index[0])
    )
    ref = {g: m[lab] for g, lab in majority.items()}
    sizes = adata.obs["_group"].value_counts()

    subsets = [("preset:" + PRESET[name], PRESET[name])]
    if args.all_cl:
        subsets.append(("all CL", None))
    rows = []
    for subset_name, within in subsets:
        cand = ontology_candidates(within)
        in_set = {g: r in set(cand["term_id"]) for g, r in ref.items()}
        variants = {
            "markers+centroid": {},
            "centroid": {"use_markers": False},
            "markers": {"marker_weight": 1.0},
        }
        markers = None
        for method, kw in variants.items():
            t0 = time.perf_counter()
            annotate_clusters(adata, key="_group", within=within, n_top=3, **kw)
            sec = time.perf_counter() - t0
            res = adata.uns["_group_annotation"]
            if method == "markers+centroid":
                markers = res["markers"]
            for g, df in res["ranking"].groupby("cluster", observed=True):
                ids = df.sort_values("rank")["term_id"].tolist()
                rows.append({"dataset": name, "candidates": subset_name,
                             "n_candidates": len(cand), "method": method, "cluster": g,
                             "n_cells": int(sizes[g]), "reference": ref[g],
                             "ref_in_candidates": in_set[g], "top1": ids[0],
                             "seconds": sec, **hits(ids, ref[g], parser)})
        base = name_overlap_ranking(markers, cand)
        for g, idx in base.items():
            ids = cand["term_id"].iloc[idx].tolist()
            rows.append({"dataset": name, "candidates": subset_name, "n_candidates": len(cand),
                         "method": "name-overlap", "cluster": g, "n_cells": int(sizes[g]),
                         "reference": ref[g], "ref_in_candidates": in_set[g], "top1": ids[0],
                         "seconds": np.nan, **hits(ids, ref[g], parser)})
        print(f"{name} [{subset_name}] done", flush=True)
    return rows


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["top1_exact", "top3_exact", "top1_near", "top3_near"]
    per = (df.groupby(["candidates", "method", "dataset"])[cols].mean().reset_index())
    overall = per.groupby(["candidates", "method"])[cols].mean().reset_index()
    overall["dataset"] = "MEAN (over datasets)"
    return pd.concat([per, overall], ignore_index=True)


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(
            f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="*", default=list(PRESET))
    p.add_argument("--grouping", choices=["leiden", "scllm_dsc", "truth"], default="leiden")
    p.add_argument("--all-cl", action="store_true", help="also rank among all CL terms")
    p.add_argument("--min-cells", type=int, default=0,
                   help="drop genes detected in fewer cells before anything (saves embedding)")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--genetext", default=str(DEFAULT_GENETEXT))
    p.add_argument("--out", default=str(RESULTS / "annotation"))
    args = p.parse_args(argv)

    from scllm_dsc.tl._candidates import ontology_parser

    parser = ontology_parser()
    cmap = pd.read_csv(HERE / "cell_ontology_map.csv", dtype=str).fillna("")
    rows = []
    for name in args.datasets:
        rows += run_dataset(name, args, cmap, parser)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    summary = summarise(df)
    cov = (df[df["method"] == "centroid"].groupby(["candidates", "dataset"])
           ["ref_in_candidates"].mean())
    text = [
        "# Cluster annotation: suggested Cell Ontology names vs. majority true label",
        "",
        f"Command: `python benchmarks/annotation.py {' '.join(argv or sys.argv[1:])}`".rstrip(),
        "",
        f"Grouping: **{args.grouping}** with k = number of true labels"
        + (" (k-matched Leiden on PCA of log-normalised HVGs; sd.tl.cluster was not used)"
           if args.grouping == "leiden" else "") + ".",
        "Reference per cluster: the CL term of its majority true label "
        "(`benchmarks/cell_ontology_map.csv`). Accuracy = fraction of clusters (unweighted), "
        "then averaged over datasets. *exact*: suggested term = reference term; *near*: the "
        "reference term or a direct parent/child of it.",
        "",
        to_markdown(summary),
        "",
        "Fraction of clusters whose reference term is among the candidates:",
        "",
        to_markdown(cov.reset_index()),
        "",
        f"Per-cluster rows (top-1 suggestions): `{out.with_suffix('.csv').name}`.",
    ]
    Path(out.with_suffix(".md")).write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
