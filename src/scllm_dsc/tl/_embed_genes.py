"""Semantic view: gene text embeddings and Path 1 (abundance-weighted cell text embedding)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scanpy import logging as logg
from scipy import sparse

from .._constants import DEFAULT_MODEL, Key
from .._docs import inject_docs
from .._utils import (
    counts_hint,
    get_matrix,
    iter_row_chunks,
    l2_normalize,
    resolve_adata,
    top_k_per_row,
)
from ._semantic import check_expression, gene_names, gene_stats, idf_weights, normalize_block


def process_gene_vectors(
    G: np.ndarray, *, center: bool = True, n_remove_pcs: int = 1
) -> tuple[np.ndarray, dict]:
    """Remove what all gene vectors share before they are aggregated.

    ``G`` holds the vectors of the genes with text. Centring subtracts their mean; then the
    top ``n_remove_pcs`` principal directions are projected out ("all-but-the-top"); rows are
    L2-normalised again. Returns the vectors and what was removed (for provenance).
    """
    G = np.asarray(G, dtype=np.float64)
    info: dict = {"center": bool(center), "n_remove_pcs": int(n_remove_pcs)}
    if center and len(G):
        mean = G.mean(0)
        info["mean_norm"] = float(np.linalg.norm(mean))
        G = G - mean
    if n_remove_pcs > 0 and len(G) > n_remove_pcs:
        _, s, vt = np.linalg.svd(G - G.mean(0) if not center else G, full_matrices=False)
        top = vt[:n_remove_pcs]
        info["removed_energy"] = float((s[:n_remove_pcs] ** 2).sum() / (s**2).sum())
        G = G - (G @ top.T) @ top
    return l2_normalize(G), info


def iter_cell_text_weights(
    X,
    genes: np.ndarray,
    n_top_genes: int,
    *,
    is_counts: bool = True,
    gene_weight: np.ndarray | None = None,
    chunk_size: int = 4096,
):
    """Yield ``(start, stop, W)`` over row blocks: each cell's weights over ``genes`` (column
    indices of ``X``), its top ``n_top_genes`` by log1p-normalised expression, times
    ``gene_weight``, summing to one (rows without such a gene stay zero). One block in
    memory at a time."""
    m = len(genes)
    for start, stop, block in iter_row_chunks(X, chunk_size):
        norm = normalize_block(block, is_counts)[:, genes]
        top = top_k_per_row(norm, n_top_genes)
        vals = top.values.astype(np.float64)
        if gene_weight is not None:
            vals = vals * gene_weight[top.indices]
        W = sparse.csr_matrix((vals, top.indices, top.indptr), shape=(norm.shape[0], m))
        rowsum = np.asarray(W.sum(1)).ravel()
        scale = np.divide(1.0, rowsum, out=np.zeros_like(rowsum), where=rowsum > 0)
        yield start, stop, sparse.csr_matrix(sparse.diags(scale) @ W)


def cell_text_weights(X, genes: np.ndarray, n_top_genes: int, **kwargs) -> sparse.csr_matrix:
    """All cells' weights of :func:`iter_cell_text_weights` as one matrix (cells x len(genes))."""
    parts = [W for _, _, W in iter_cell_text_weights(X, genes, n_top_genes, **kwargs)]
    return sparse.vstack(parts).tocsr() if parts else sparse.csr_matrix((0, len(genes)))


@inject_docs()
def embed_genes(
    adata,
    knowledge=None,
    *,
    model: str = DEFAULT_MODEL,
    species: str | None = None,
    layer: str | None = None,
    n_top_genes: int = 2048,
    gene_symbols: str | None = None,
    ensembl_ids: str | Sequence[str] | None = None,
    mod: str | None = None,
    center: bool = False,
    n_remove_pcs: int = 0,
    idf: bool = False,
    pooling: str | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    key_added: str = Key.GENE_TEXT,
    copy: bool = False,
):
    """Embed each gene's knowledge text and describe cells by their genes (Path 1).

    Genes are matched to the knowledge source (symbol, then alias, then Ensembl ID); each
    matched gene's text is embedded by the frozen text encoder (cached on disk). Genes
    without text get a zero vector and are left out of the cell embedding.

    The per-cell embedding (GenePT-w style) takes the cell's ``n_top_genes`` most expressed
    genes *with text*, weights them by log1p of library-size-normalised expression (weights
    sum to one) and sums their vectors; the result is L2-normalised, so sequencing depth
    does not set its length. Options act on the aggregation only (``varm[key_added]`` keeps
    the plain L2-normalised text vectors): ``center`` subtracts the mean gene vector,
    ``n_remove_pcs`` projects out the top principal directions of the gene vectors, and
    ``idf`` multiplies each gene's weight by ``log((1 + n_cells) / (1 + n_cells_expressing))``.

    Defaults were chosen by the mean 5-fold 15-NN accuracy of the labelled cell type on
    three of the shared datasets (``benchmarks/semantic_view.py``; the numbers, including
    the random-gene-vector control, are on the benchmarks page): plain weights scored
    highest, so all three options are off by default; they remain available because they
    can help clustering-type use (section 9 of the method notes saw a strong common
    direction hurt ARI).

    Parameters
    ----------
    {adata}
    knowledge
        Gene texts: a table path, a folder, ``"ncbi"``, a dict ``{{symbol: text}}`` or a
        :class:`~scllm_dsc.knowledge.KnowledgeSource`
        (see :func:`~scllm_dsc.knowledge.get_knowledge`).
    {model}
    species
        ``"human"`` or ``"mouse"``; ``None`` infers it from the gene names.
    {layer}
    n_top_genes
        Genes per cell in the cell embedding (the paper's K).
    gene_symbols
        Column of ``adata.var`` holding gene symbols (or Ensembl IDs); ``None`` uses
        ``var_names``.
    ensembl_ids
        Column of ``adata.var`` (or a sequence) with Ensembl gene IDs, used for genes whose
        name does not match.
    {mod}
    center
        Subtract the mean gene vector before aggregating.
    n_remove_pcs
        Number of top principal directions of the gene vectors projected out before
        aggregating (0 keeps them).
    idf
        Multiply expression weights by the genes' inverse document frequency.
    {pooling}
    max_length
        Context of the encoder in tokens (longer gene texts are truncated); ``None`` uses the
        model's own.
    {batch_size}
    {device}
    {key_added}
        Gene vectors go to ``varm[key_added]``, the found mask to
        ``var[key_added + "_found"]``, cell embeddings to ``obsm["X_" + key_added]``,
        parameters to ``uns[key_added]["params"]``.
    {copy}

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``, with

    - ``varm["gene_text"]``: float32 (n_vars x d), L2-normalised, zero rows for genes
      without text;
    - ``var["gene_text_found"]``: bool;
    - ``obsm["X_gene_text"]``: float32 (n_obs x d), L2-normalised (zero for cells with no
      expressed gene with text);
    - ``uns["gene_text"]["params"]``: model, knowledge source, species, coverage, match
      routes and processing options.
    """
    from ..encoders import get_encoder
    from ..knowledge import get_knowledge, infer_species, match_genes
    from ..knowledge._match import _ensembl_id

    if int(n_top_genes) < 1:
        raise ValueError(f"`n_top_genes` must be a positive integer, got {n_top_genes}.")
    if int(n_remove_pcs) < 0:
        raise ValueError(f"`n_remove_pcs` must be >= 0, got {n_remove_pcs}.")
    data = adata.copy() if copy else adata
    ad = resolve_adata(data, mod)
    X = get_matrix(ad, layer)
    is_counts = check_expression(X, layer)
    if not is_counts:
        logg.warning(
            f"{counts_hint(ad, layer)} Using its values as normalised expression here; "
            "`sd.tl.cluster` will need the counts (pass `layer=`)."
        )

    names = gene_names(ad, gene_symbols)
    if isinstance(ensembl_ids, str):
        if ensembl_ids not in ad.var.columns:
            raise KeyError(f"`ensembl_ids={ensembl_ids!r}` is not a column of `adata.var`.")
        ensembl_ids = ad.var[ensembl_ids].astype(object).tolist()
    if species is None:
        species = infer_species(names)
        logg.info(f"inferred species {species!r} from the gene names")
    source = get_knowledge(knowledge, species=species)
    match = match_genes(names, source, ensembl_ids=ensembl_ids)
    found = np.asarray(match.found, dtype=bool)
    if not found.any():
        hint = (
            "Check `species=`, `gene_symbols=` (a var column with symbols) or `ensembl_ids=`."
        )
        n_ens = sum(_ensembl_id(n) is not None for n in names)
        if len(names) and n_ens >= 0.5 * len(names) and not source.ensembl():
            hint = (
                "The gene names are Ensembl IDs and this knowledge source has no Ensembl ID "
                "table: pass `gene_symbols=` naming a var column with gene symbols (columns: "
                f"{list(ad.var.columns)}), or use a gene text table with an "
                f"'{species}_ensembl_to_symbol.tsv.gz' file next to it."
            )
        raise ValueError(
            f"No gene of the dataset has a text in the knowledge source {source.name!r} "
            f"(first genes: {list(names[:5])}). {hint}"
        )

    # coverage among expressed genes
    mean_expr, frac_expr = gene_stats(X, is_counts)
    expressed = frac_expr > 0
    cov_expressed = float(found[expressed].mean()) if expressed.any() else 0.0
    cov_expression = float(mean_expr[found].sum() / max(mean_expr.sum(), 1e-12))
    logg.info(
        f"gene texts for {found.sum()}/{len(found)} genes ({match.coverage:.1%}); "
        f"{cov_expressed:.1%} of expressed genes, {cov_expression:.1%} of normalised expression"
    )
    if cov_expressed < 0.5:
        logg.warning(
            f"only {cov_expressed:.1%} of the expressed genes have a text; check the species "
            "and the gene identifiers (`gene_symbols=`, `ensembl_ids=`)."
        )

    enc = get_encoder(
        model, pooling=pooling, device=device, batch_size=batch_size, max_length=max_length
    )
    idx = np.flatnonzero(found)
    texts = [match.texts[i] for i in idx]
    G_found = enc.encode(texts, desc="gene texts")
    G = np.zeros((len(names), G_found.shape[1]), dtype=np.float32)
    G[idx] = G_found

    Gp, proc = process_gene_vectors(G_found, center=center, n_remove_pcs=n_remove_pcs)
    gene_weight = idf_weights(frac_expr[idx], X.shape[0]) if idf else None
    Gp32 = np.asarray(Gp, dtype=np.float32)
    Z = np.empty((X.shape[0], Gp32.shape[1]), dtype=np.float32)
    n_empty = 0
    for start, stop, W in iter_cell_text_weights(
        X, idx, int(n_top_genes), is_counts=is_counts, gene_weight=gene_weight
    ):
        Z[start:stop] = l2_normalize(np.asarray(W.astype(np.float32) @ Gp32))
        n_empty += int((np.asarray(W.getnnz(1)) == 0).sum())
    if n_empty:
        logg.warning(f"{n_empty} cells express no gene with text; their embedding is zero.")

    summary = match.summary()
    params = {
        "model": enc.name,
        "pooling": enc.pooling,
        "max_length": int(enc.max_length),
        "dim": int(G.shape[1]),
        "knowledge": str(source.name),
        "species": str(species),
        "n_genes": int(len(names)),
        "n_found": int(found.sum()),
        "coverage": float(match.coverage),
        "coverage_expressed": cov_expressed,
        "coverage_expression": cov_expression,
        "matched_by": {k: int(summary[k]) for k in ("symbol", "alias", "ensembl", "unmatched")},
        "n_top_genes": int(n_top_genes),
        "layer": layer,
        "gene_symbols": gene_symbols,
        "weights": "log1p_cp10k" if is_counts else "values",
        "idf": bool(idf),
        **proc,
    }
    # write everything at the end
    ad.varm[key_added] = G
    ad.var[f"{key_added}_found"] = found
    ad.obsm[Key.latent(key_added)] = Z
    ad.uns[key_added] = {"params": params}
    return data if copy else None
