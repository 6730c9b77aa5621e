"""Command line entry point: ``scllm-dsc demo``."""

from __future__ import annotations

import argparse
import sys
import time


def _demo(args: argparse.Namespace) -> int:
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    import scllm_dsc as sd

    adata = sd.datasets.pbmc68k_counts()
    print(f"data: scanpy's bundled pbmc68k_reduced, {adata.n_obs} cells x {adata.n_vars} genes")
    t0 = time.perf_counter()
    try:
        sd.tl.embed_genes(adata, knowledge=args.knowledge, model=args.model)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    params = adata.uns[sd._constants.Key.GENE_TEXT]["params"]
    print(
        f"knowledge: {params['knowledge']} (species {params['species']}, "
        f"gene coverage {params['coverage']:.3f})"
    )
    print(f"text model: {params['model']}")
    sd.tl.cell_sentences(adata, model=args.model)
    n_clusters = args.n_clusters or int(adata.obs["bulk_labels"].nunique())
    sd.tl.cluster(adata, n_clusters=n_clusters, random_state=args.random_state)
    labels = adata.obs[sd._constants.Key.CLUSTER]
    sizes = np.bincount(labels.cat.codes.to_numpy())
    print(f"clusters: {n_clusters}, sizes {sizes.tolist()}")
    ari = adjusted_rand_score(adata.obs["bulk_labels"], labels)
    print(f"ARI against obs['bulk_labels'] (evaluation only): {ari:.3f}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    if args.output:
        adata.write_h5ad(args.output)
        print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``scllm-dsc`` command line interface."""
    parser = argparse.ArgumentParser(prog="scllm-dsc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="embed gene knowledge and cluster scanpy's bundled pbmc68k_reduced (offline)",
    )
    demo.add_argument(
        "--knowledge",
        default=None,
        help="gene-text table or folder (default: sd.settings.knowledge_dir, env SCLLM_DSC_DATA)",
    )
    demo.add_argument("--model", default=None, help="text model id or folder (default MiniLM)")
    demo.add_argument("--n-clusters", type=int, default=None)
    demo.add_argument("--random-state", type=int, default=0)
    demo.add_argument("--output", default=None, help="write the result to this .h5ad file")
    args = parser.parse_args(argv)
    if args.model is None:
        from ._constants import DEFAULT_MODEL

        args.model = DEFAULT_MODEL
    if args.command == "demo":
        return _demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
