"""How often does ``sd.tl.annotate_clusters`` name a cluster with the right Cell Ontology term?

For each shared dataset whose labels map to the Cell Ontology (``cell_ontology_map.csv``;
CellBench's cancer cell lines have no CL type and are skipped):

1. cells are grouped by ``--grouping``: ``truth`` (the true labels: perfect clusters),
   ``scllm_dsc`` (``sd.tl.cluster`` with the true k) or ``leiden`` (a label-free stand-in:
   k-matched Leiden on PCA of log-normalised HVGs; *not* the ``sd.tl.cluster`` number);
2. each group's reference is the CL term of its majority true label;
3. methods, on the same cells and groups:

   - ``sd markers`` : ``annotate_clusters(method="markers")`` with the dataset's tissue preset
     (``within=``) and the default sources (CL texts and cellconsensus when installed);
   - ``sd markers all sources`` : the same with the gene-text links added (the default
     before they were measured to add noise beside the database);
   - ``sd markers auto`` : the same with ``within=None`` (all CL terms, narrowed from the
     data by the coarse first pass);
   - ``sd markers CL+text`` : preset, without the cellconsensus database (CL texts and gene
     summaries only);
   - ``cellconsensus L2`` / ``L3`` : cellconsensus run its own way (``CellConsensus()``,
     default ``ccc`` mode on the counts), level 2 / 3 labels as CL ids, majority per group;
   - ``cellconsensus groups L2`` / ``L3`` : cellconsensus with ``clustering="precomputed"``
     on the same groups;
   - ``baseline similarity`` (``--baseline``): today's text-similarity ranking
     (``method="similarity"``, needs gene embeddings: slow on a CPU);

4. accuracy over groups (unweighted), averaged over datasets: ``exact`` (term = reference)
   and ``near`` (the reference, or up to two is_a steps above or below it), top-1 and
   top-3 (cellconsensus gives one label: its top-3 is its top-1). "unassigned" counts
   as wrong.

Usage::

    python benchmarks/annotation.py --grouping truth
    python benchmarks/annotation.py --grouping truth --datasets PBMC68k_reduced_700
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, DEFAULT_GENETEXT, RESULTS  # noqa: E402

HERE = Path(__file__).resolve().parent
PRESET = {
    "Baron_human_subset": "pancreas",
    "Kang_ctrl_PBMC_8684": "immune",
    "PBMC68k_reduced_700": "immune",
    "Zheng_sortedPBMC_2140": "immune",
    "Pancreas_endocrinogenesis_739": "pancreas",
    "Zeisel_subset_1464": "brain",
}
#: datasets the method's few settings were looked at on (the others are untuned)
TUNED_ON = ("PBMC68k_reduced_700", "Baron_human_subset", "Zeisel_subset_1464")


def group_cells(adata, k: int, how: str, seed: int = 0) -> np.ndarray:
    if how == "truth":
        return adata.obs["cell_type"].astype(str).to_numpy()
    if how == "leiden":
        from _common import log_normalised_pca

        from scllm_dsc.graph import leiden_n_clusters

        ad = log_normalised_pca(adata, random_state=seed)
        return leiden_n_clusters(ad.obsm["X_pca"], k, random_state=seed).astype(str)
    if how == "scllm_dsc":
        import scllm_dsc as sd

        ad = adata.copy()
        sd.tl.cluster(ad, n_clusters=k, random_state=seed)
        return ad.obs["scllm_dsc"].astype(str).to_numpy()
    raise ValueError(how)


def near_set(ref: str, cl) -> set[str]:
    return {ref, *cl.ancestors(ref, 2), *cl.descendants(ref, 2)}


def hits(ranked_ids: list[str], ref: str, cl) -> dict[str, bool]:
    near = near_set(ref, cl)
    return {
        "top1_exact": ranked_ids[:1] == [ref],
        "top3_exact": ref in ranked_ids[:3],
        "top1_near": bool(ranked_ids[:1]) and ranked_ids[0] in near,
        "top3_near": any(t in near for t in ranked_ids[:3]),
    }


def _majority(labels: pd.Series, groups: pd.Series) -> dict[str, str]:
    df = pd.DataFrame({"l": labels.astype(str).values, "g": groups.astype(str).values})
    return df.groupby("g")["l"].agg(lambda s: s.value_counts().index[0]).to_dict()


def run_cellconsensus(adata, groups: pd.Series, species: str = "human",
                      knowledge: str | None = None) -> dict[str, dict[str, list[str]]]:
    """cellconsensus run its own way (ccc) and on our groups (precomputed).

    Its marker lists are human symbols: mouse genes get their human ortholog symbols first
    (the same mapping ``sd.tl.annotate_clusters`` uses), so it can read them.
    """
    from cellconsensus import CellConsensus

    out = {}
    ad = adata.copy()
    if species != "human":
        from scllm_dsc.knowledge._cell_markers import mouse_to_human, to_human

        ad.var_names = pd.Index(to_human(ad.var_names, species, mouse_to_human(knowledge)))
        ad.var_names_make_unique()
    ad.obs["_g"] = groups.values
    cc = CellConsensus()
    cc.fit(ad, verbose=False)
    for lvl in (2, 3):
        maj = _majority(cc.predict(level=lvl, output="cl_id"), groups)
        out[f"cellconsensus L{lvl}"] = {g: [t] for g, t in maj.items()}
    cc2 = CellConsensus(clustering="precomputed", cluster_key="_g")
    cc2.fit(ad, verbose=False)
    for lvl in (2, 3):
        maj = _majority(cc2.predict(level=lvl, output="cl_id"), groups)
        out[f"cellconsensus groups L{lvl}"] = {g: [t] for g, t in maj.items()}
    return out


def run_dataset(name: str, args, cmap: pd.DataFrame, cl) -> list[dict]:
    import anndata as ad

    from scllm_dsc.tl._annotate import annotate_clusters

    adata = ad.read_h5ad(Path(args.data) / f"{name}.h5ad")
    m = cmap[cmap["dataset"] == name].set_index("label")["term_id"]
    k = adata.obs["cell_type"].nunique()
    from scllm_dsc.knowledge import infer_species

    species = infer_species(list(adata.var_names))
    t0 = time.perf_counter()
    adata.obs["_group"] = pd.Categorical(group_cells(adata, k, args.grouping, args.seed))
    t_group = time.perf_counter() - t0
    majority = _majority(adata.obs["cell_type"], adata.obs["_group"])
    ref = {g: m[lab] for g, lab in majority.items()}
    sizes = adata.obs["_group"].value_counts()
    knowledge = Path(args.genetext) / "human_gene_text.tsv.gz"

    ranked: dict[str, dict[str, list[str]]] = {}
    seconds: dict[str, float] = {}
    variants = {
        "sd markers": {"within": PRESET[name]},
        "sd markers auto": {"within": None},
        "sd markers CL+text": {"within": PRESET[name], "sources": ["CL", "gene text"]},
        "sd markers all sources": {"within": PRESET[name],
                                   "sources": ["CL", "gene text", "cellconsensus"]},
    }
    for method, kw in variants.items():
        if args.methods and method not in args.methods:
            continue
        t0 = time.perf_counter()
        annotate_clusters(adata, key="_group", species=species, knowledge=knowledge, **kw)
        seconds[method] = time.perf_counter() - t0
        res = adata.uns["_group_annotation"]
        assigned = res["assigned"].set_index("cluster")["name"]
        out = {}
        for g, df in res["ranking"].groupby("cluster", observed=True):
            ids = df.sort_values("rank")["term_id"].tolist()
            if assigned[g] == "unassigned":
                ids = ["unassigned"] + ids[:2]
            out[g] = ids
        ranked[method] = out
    if not args.methods or any(m.startswith("cellconsensus") for m in args.methods):
        t0 = time.perf_counter()
        cc = run_cellconsensus(adata, adata.obs["_group"], species, str(knowledge))
        sec = time.perf_counter() - t0
        for k_, v in cc.items():
            ranked[k_] = v
            seconds[k_] = sec / 2
    if args.baseline:
        import scllm_dsc as sd

        ad2 = adata.copy()
        if args.min_cells > 0:
            import scanpy as sc

            sc.pp.filter_genes(ad2, min_cells=args.min_cells)
        sd.tl.embed_genes(ad2, knowledge=Path(args.genetext) / f"{species}_gene_text.tsv.gz",
                          species=species)
        t0 = time.perf_counter()
        annotate_clusters(ad2, key="_group", within=PRESET[name], method="similarity")
        seconds["baseline similarity"] = time.perf_counter() - t0
        r = ad2.uns["_group_annotation"]["ranking"]
        ranked["baseline similarity"] = {
            g: df.sort_values("rank")["term_id"].tolist()
            for g, df in r.groupby("cluster", observed=True)
        }

    rows = []
    for method, per in ranked.items():
        for g in ref:
            ids = per.get(g, [])
            rows.append({
                "dataset": name, "grouping": args.grouping, "method": method, "cluster": g,
                "n_cells": int(sizes[g]), "reference": ref[g],
                "reference_name": cl.label.get(ref[g], ref[g]),
                "top1": ids[0] if ids else "", "top1_name": cl.label.get(ids[0], ids[0])
                if ids else "", "top3": "|".join(ids[:3]), "seconds": seconds.get(method),
                "grouping_seconds": t_group, "tuned_on": name in TUNED_ON,
                **hits(ids, ref[g], cl),
            })
    print(f"{name} done", flush=True)
    return rows


COLS = ["top1_exact", "top1_near", "top3_exact", "top3_near"]


def summarise(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    per = df.groupby(["method", "dataset"])[COLS].mean().unstack("dataset")
    mean = df.groupby(["method", "dataset"])[COLS].mean().groupby("method").mean()
    untuned = (df[~df["tuned_on"]].groupby(["method", "dataset"])[COLS].mean()
               .groupby("method").mean())
    untuned.columns = [f"{c} (untuned)" for c in untuned.columns]
    return pd.concat([mean, untuned], axis=1), per


def to_markdown(df: pd.DataFrame, index_name: str = "method") -> str:
    df = df.reset_index()
    cols = [index_name if c == "index" else str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(
            f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # small datasets first, so a run cut short still covers most of them
    p.add_argument("--datasets", nargs="*", default=[
        "PBMC68k_reduced_700", "Zeisel_subset_1464", "Pancreas_endocrinogenesis_739",
        "Zheng_sortedPBMC_2140", "Baron_human_subset", "Kang_ctrl_PBMC_8684"])
    p.add_argument("--grouping", choices=["truth", "scllm_dsc", "leiden"], default="truth")
    p.add_argument("--methods", nargs="*", default=None,
                   help="only these methods (names as in the table; default all)")
    p.add_argument("--baseline", action="store_true",
                   help="also today's text-similarity method (embeds every gene: slow on CPU)")
    p.add_argument("--min-cells", type=int, default=10,
                   help="baseline only: drop genes detected in fewer cells before embedding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--genetext", default=str(DEFAULT_GENETEXT))
    p.add_argument("--out", default=None)
    p.add_argument("--combine", nargs="*", default=None,
                   help="only summarise these per-group CSVs of earlier runs; a later file's "
                        "(dataset, method) rows replace an earlier file's")
    args = p.parse_args(argv)
    out = Path(args.out or RESULTS / f"annotation_{args.grouping}")
    if args.combine:
        parts = [pd.read_csv(f) for f in args.combine]
        df = parts[0]
        for nxt in parts[1:]:
            keys = set(zip(nxt["dataset"], nxt["method"], strict=True))
            df = pd.concat([df[[k not in keys for k in zip(df["dataset"], df["method"],
                                                               strict=True)]], nxt])
        write(df.reset_index(drop=True), args, argv, out, done=True)
        return

    from scllm_dsc.knowledge._cell_markers import cell_ontology

    cl = cell_ontology()
    cmap = pd.read_csv(HERE / "cell_ontology_map.csv", dtype=str).fillna("")
    rows = []
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        rows += run_dataset(name, args, cmap, cl)
        write(pd.DataFrame(rows), args, argv, out, done=name == args.datasets[-1])


def write(df: pd.DataFrame, args, argv, out: Path, done: bool) -> None:
    """Write the rows so far (after each dataset, so a long run leaves partial results)."""
    df.to_csv(out.with_suffix(".csv"), index=False)
    mean, per = summarise(df)
    per_near = per["top1_near"]
    per_exact = per["top1_exact"]
    secs = df.groupby(["method", "dataset"])["seconds"].first().unstack("dataset")
    text = [
        "# Cluster annotation: suggested Cell Ontology term vs. majority true label",
        "",
        f"Command: `python benchmarks/annotation.py {' '.join(argv or sys.argv[1:])}`".rstrip(),
        "",
        ("" if done else "**Partial run: only the datasets listed have finished.**\n\n")
        + f"Grouping: **{args.grouping}**"
        + (" (label-free stand-in: k-matched Leiden on PCA, NOT sd.tl.cluster)"
           if args.grouping == "leiden" else "") + ". Datasets: "
        + ", ".join(df["dataset"].unique())
        + ". Accuracy over groups, averaged over datasets; *near* = reference term or up to "
        "two is_a steps above/below it. Tuned on (settings looked at): "
        + ", ".join(t for t in TUNED_ON if t in set(df["dataset"]))
        + "; the `(untuned)` columns "
        "average the other datasets only.",
        "",
        "## Mean over datasets",
        "",
        to_markdown(mean),
        "",
        "## Top-1 near, per dataset",
        "",
        to_markdown(per_near),
        "",
        "## Top-1 exact, per dataset",
        "",
        to_markdown(per_exact),
        "",
        "## Seconds per call (cellconsensus: half of fit + predict of both levels)",
        "",
        to_markdown(secs),
        "",
        f"Per-group rows: `{out.with_suffix('.csv').name}`.",
    ]
    out.with_suffix(".md").write_text("\n".join(text) + "\n")
    print("\n".join(text), flush=True)


if __name__ == "__main__":
    main()
