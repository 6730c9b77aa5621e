"""Command line entry point: ``scllm-dsc demo``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

_DESCRIPTION = (
    "scllm_dsc: cluster single-cell RNA-seq data with gene knowledge from language models. "
    "'scllm-dsc demo' runs the whole method offline on scanpy's bundled pbmc68k_reduced."
)
_DEFAULT_OUTPUT = "scllm_dsc_demo"


def _demo(args: argparse.Namespace) -> int:
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    import scllm_dsc as sd
    from scllm_dsc._constants import Key

    out_dir = Path(args.output)
    adata = sd.datasets.pbmc68k_counts()
    print(f"data: scanpy's bundled pbmc68k_reduced, {adata.n_obs} cells x {adata.n_vars} genes")
    t0 = time.perf_counter()
    try:
        sd.tl.embed_genes(adata, knowledge=args.knowledge, model=args.model)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    params = adata.uns[Key.GENE_TEXT]["params"]
    print(
        f"knowledge: {params['knowledge']} (species {params['species']}, "
        f"gene coverage {params['coverage']:.3f})"
    )
    print(f"text model: {params['model']}")
    sd.tl.cell_sentences(adata, model=args.model)
    n_clusters = args.n_clusters or int(adata.obs["bulk_labels"].nunique())
    sd.tl.cluster(adata, n_clusters=n_clusters, random_state=args.random_state)
    labels = adata.obs[Key.CLUSTER]
    sizes = np.bincount(labels.cat.codes.to_numpy())
    print(
        f"clusters: {len(sizes)} (requested {n_clusters}), sizes {sizes.tolist()}"
    )
    ari = adjusted_rand_score(adata.obs["bulk_labels"], labels)
    print(f"ARI against obs['bulk_labels'] (evaluation only): {ari:.3f}")
    print(f"done in {time.perf_counter() - t0:.1f} s")

    out_dir.mkdir(parents=True, exist_ok=True)
    h5ad = out_dir / "pbmc68k_scllm_dsc.h5ad"
    adata.write_h5ad(h5ad)
    print(f"wrote {h5ad}")
    figure = _umap_figure(adata, out_dir / "umap.png")
    print(f"wrote {figure}")
    return 0


def _umap_figure(adata, path: Path) -> Path:
    """UMAP of the fused latent coloured by cluster and by the published labels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import scanpy as sc

    from scllm_dsc._constants import Key

    view = adata.copy()  # the written .h5ad stays as sd.tl.cluster left it
    sc.pp.neighbors(view, use_rep=Key.latent(Key.CLUSTER), key_added="demo")
    sc.tl.umap(view, neighbors_key="demo", random_state=0)
    fig = sc.pl.umap(
        view, color=[Key.CLUSTER, "bulk_labels"], show=False, return_fig=True, wspace=0.5
    )
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the ``scllm-dsc`` command line interface."""
    from scllm_dsc import __version__

    parser = argparse.ArgumentParser(prog="scllm-dsc", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"scllm-dsc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="embed gene knowledge and cluster scanpy's bundled pbmc68k_reduced (offline)",
        description="Embed gene knowledge, build cell sentences and cluster scanpy's bundled "
        "pbmc68k_reduced (700 cells), all offline; writes an .h5ad and a UMAP figure.",
    )
    demo.add_argument(
        "--knowledge",
        default=None,
        help="gene-text table or folder (default: the knowledge shipped with the package, "
        "or sd.settings.knowledge_dir / env SCLLM_DSC_DATA when set)",
    )
    demo.add_argument("--model", default=None, help="text model id or folder (default MiniLM)")
    demo.add_argument("--n-clusters", type=int, default=None)
    demo.add_argument("--random-state", type=int, default=0)
    demo.add_argument(
        "--output",
        default=_DEFAULT_OUTPUT,
        help=f"folder for the result .h5ad and the UMAP figure (default ./{_DEFAULT_OUTPUT})",
    )
    args = parser.parse_args(argv)
    if args.model is None:
        from ._constants import DEFAULT_MODEL

        args.model = DEFAULT_MODEL
    if args.command == "demo":
        return _demo(args)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
