"""Write the tutorial notebooks (sources) and execute them in place, stored with outputs.

Usage: ``python tutorials/_make.py`` from the repository root. ``tests/test_tutorials.py``
executes the committed notebooks again in CI so they cannot rot.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

SETUP = '''import scanpy as sc
import scllm_dsc as sd

sc.settings.verbosity = 1  # warnings only; progress bars still show'''

PBMC = [
    ("md", "# Cluster PBMCs with gene knowledge\n\nThis tutorial runs scllm_dsc end to end on "
     "700 peripheral blood mononuclear cells (the cells of scanpy's bundled `pbmc68k_reduced`, "
     "with counts recovered from its log-normalised values). Every step runs offline on a CPU "
     "in about a minute."),
    ("code", SETUP),
    ("md", "## Data\n\n`sd.datasets.pbmc68k_counts()` returns raw counts and the published "
     "(noisy) labels in `obs['bulk_labels']`, which we use only to evaluate."),
    ("code", "adata = sd.datasets.pbmc68k_counts()\nadata"),
    ("md", "## Semantic view\n\n`sd.tl.embed_genes` embeds each gene's NCBI description with "
     "a frozen language model (default `all-MiniLM-L6-v2`) and forms each cell's "
     "expression-weighted knowledge embedding. `sd.tl.cell_sentences` writes each cell as a "
     "sentence of gene symbols by decreasing expression and embeds it."),
    ("code", "sd.tl.embed_genes(adata)  # NCBI gene knowledge shipped with the package\n"
     "adata.uns['gene_text']['params']['coverage'], adata.varm['gene_text'].shape"),
    ("code", "sd.tl.cell_sentences(adata)\nadata.obs['cell_sentence'].str.split().str[:8].head()"),
    ("md", "## Clustering\n\n`sd.tl.cluster` builds the sparse cell graph, trains the "
     "cross-modal model and clusters in the fused latent space. Here we give the number of "
     "clusters; leave `n_clusters=None` to estimate it."),
    ("code", "sd.tl.cluster(adata, n_clusters=10, random_state=0)\n"
     "adata.obs['scllm_dsc'].value_counts().sort_index()"),
    ("code", "from sklearn.metrics import adjusted_rand_score\n\n"
     "adjusted_rand_score(adata.obs['bulk_labels'], adata.obs['scllm_dsc'])"),
    ("md", "## Look at the result\n\nThe fused latent works with scanpy as any other "
     "representation."),
    ("code", "sc.pp.neighbors(adata, use_rep='X_scllm_dsc')\nsc.tl.umap(adata, random_state=0)\n"
     "sc.pl.umap(adata, color=['scllm_dsc', 'bulk_labels'], wspace=0.4)"),
    ("md", "How well do the semantic and structural views agree, and did training converge?"),
    ("code", "sd.pl.alignment(adata)"),
    ("code", "sd.pl.training_history(adata)"),
    ("md", "What does the knowledge view think each cluster is? Genes whose descriptions are "
     "closest to each cluster's semantic centroid, next to its top differentially expressed "
     "genes:"),
    ("code", "sd.pl.cluster_gene_table(adata, n_genes=5).query('rank < 3').head(12)"),
    ("md", "## Name the clusters, with evidence\n\nGene-text similarity does not tell cell "
     "types apart; explicit marker knowledge does. `sd.tl.annotate_clusters` scores Cell "
     "Ontology terms (here the immune subset) for every cluster from the expression of their "
     "marker genes: markers stated in the ontology's own names and definitions "
     "(\"CD14-positive monocyte\") and, with `pip install \"scllm-dsc[markers]\"`, the "
     "cellconsensus marker database. A cluster without support is called `unassigned`."),
    ("code", "sd.tl.annotate_clusters(adata, within='immune')\n"
     "adata.uns['scllm_dsc_annotation']['assigned']"),
    ("md", "Each name is a suggestion to check. The dot plot shows the markers that support "
     "it; the evidence table says where each link comes from."),
    ("code", "sd.pl.annotation(adata)"),
    ("code", "ev = adata.uns['scllm_dsc_annotation']['evidence']\n"
     "cols = ['cluster', 'term_id', 'gene', 'effect_size', 'pct_in', 'pct_out', 'source']\n"
     "ev.query('rank == 1').groupby('cluster').head(2)[cols].head(12)"),
    ("md", "Two unrelated names that score nearly the same give way to their common parent "
     "(\"monocyte\" rather than a guess between classical and non-classical). The runner-up "
     "names (`ranking`, top 3 per cluster) are often the right answer when the first is a too "
     "specific child or a sibling; how often each is right is measured on the benchmarks "
     "page. Each cluster's name next to its most common published label:"),
    ("code", "adata.obs.groupby('scllm_dsc', observed=True).agg(\n"
     "    name=('scllm_dsc_annotation', 'first'),\n"
     "    published=('bulk_labels', lambda s: s.value_counts().index[0]),\n"
     "    n_cells=('bulk_labels', 'size'),\n"
     ")"),
]

SCANPY = [
    ("md", "# Add scllm_dsc to an existing scanpy notebook\n\nYou already have a processed "
     "AnnData: normalised, log-transformed, with PCA, a neighbour graph, Leiden clusters and a "
     "UMAP. scllm_dsc needs the raw counts (kept in a layer) and writes its results under its "
     "own keys, so nothing of your analysis is overwritten."),
    ("code", SETUP),
    ("md", "## Your usual scanpy analysis"),
    ("code", "adata = sd.datasets.pbmc68k_counts()\nadata.layers['counts'] = adata.X.copy()\n"
     "sc.pp.normalize_total(adata, target_sum=1e4)\nsc.pp.log1p(adata)\n"
     "sc.pp.highly_variable_genes(adata, n_top_genes=500)\nsc.pp.pca(adata, random_state=0)\n"
     "sc.pp.neighbors(adata, random_state=0)\n"
     "sc.tl.leiden(adata, flavor='igraph', n_iterations=2, random_state=0)\n"
     "sc.tl.umap(adata, random_state=0)\n"
     "before = set(adata.obsm) | set(adata.obsp) | set(adata.obs)\n"
     "adata"),
    ("md", "## The three scllm_dsc calls\n\nPoint them at the counts layer."),
    ("code", "sd.tl.embed_genes(adata, layer='counts')\n"
     "sd.tl.cell_sentences(adata, layer='counts')\n"
     "sd.tl.cluster(adata, layer='counts', random_state=0)  # n_clusters estimated"),
    ("code", "sorted((set(adata.obsm) | set(adata.obsp) | set(adata.obs)) - before)"),
    ("md", "## Compare with Leiden\n\nBoth labelings on your existing UMAP, and how they "
     "relate (the labels in `bulk_labels` are for evaluation only)."),
    ("code", "sc.pl.umap(adata, color=['leiden', 'scllm_dsc', 'bulk_labels'], wspace=0.4)"),
    ("code", "import pandas as pd\nfrom sklearn.metrics import adjusted_rand_score\n\n"
     "pd.Series({m: adjusted_rand_score(adata.obs['bulk_labels'], adata.obs[m])\n"
     "           for m in ['leiden', 'scllm_dsc']}, name='ARI vs bulk_labels')"),
    ("code", "pd.crosstab(adata.obs['leiden'], adata.obs['scllm_dsc'])"),
    ("md", "## The three views side by side\n\nUMAPs of the semantic, structural and fused "
     "embeddings (computed once, cached in `obsm`)."),
    ("code", "sd.pl.views(adata, color='scllm_dsc')"),
]

NOTEBOOKS = {"pbmc_gene_knowledge.ipynb": PBMC, "existing_scanpy_notebook.ipynb": SCANPY}


def build(name: str, cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    for kind, src in cells:
        nb.cells.append(nbformat.v4.new_markdown_cell(src) if kind == "md"
                        else nbformat.v4.new_code_cell(src))
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 900) -> nbformat.NotebookNode:
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


if __name__ == "__main__":
    names = sys.argv[1:] or list(NOTEBOOKS)
    for name in names:
        nb = execute(build(name, NOTEBOOKS[name]), HERE)
        nbformat.write(nb, HERE / name)
        print(f"wrote {HERE / name}")
