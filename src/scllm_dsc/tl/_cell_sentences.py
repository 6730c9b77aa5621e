"""Path 2 of the semantic view: cells as rank-ordered gene sentences (Cell2Sentence)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scanpy import logging as logg
from scipy import sparse

from .._constants import DEFAULT_MODEL, Key
from .._docs import inject_docs
from .._utils import get_matrix, iter_row_chunks, l2_normalize, resolve_adata, top_k_per_row
from ._semantic import check_expression, gene_names, gene_stats, normalize_block, strip_r_suffix

RANK_BY = ("expression", "specificity")


def _rank_matrix(X, rank_by: str, is_counts: bool, chunk_size: int = 4096):
    """Yield row blocks whose values order each cell's genes as ``rank_by`` asks."""
    if rank_by == "expression":
        # within a cell, library-size normalisation and log1p keep the order of counts
        yield from (b for _, _, b in iter_row_chunks(X, chunk_size))
        return
    mean, _ = gene_stats(X, is_counts, chunk_size)
    inv = np.divide(1.0, mean, out=np.zeros_like(mean), where=mean > 0)
    for _, _, block in iter_row_chunks(X, chunk_size):
        norm = normalize_block(block, is_counts)
        yield sparse.csr_matrix(norm @ sparse.diags(inv))


def build_sentences(
    X, symbols: np.ndarray, n_genes: int, rank_by: str = "expression", is_counts: bool = True
) -> list[str]:
    """Space-separated gene symbols of each cell, top ``n_genes`` by ``rank_by``."""
    sentences: list[str] = []
    for block in _rank_matrix(X, rank_by, is_counts):
        top = top_k_per_row(block, n_genes)
        for i in range(len(top.indptr) - 1):
            idx = top.indices[top.indptr[i] : top.indptr[i + 1]]
            sentences.append(" ".join(symbols[idx]))
    return sentences


@inject_docs()
def cell_sentences(
    adata,
    n_genes: int = 100,
    *,
    model: str = DEFAULT_MODEL,
    embed: bool = True,
    layer: str | None = None,
    rank_by: str = "expression",
    gene_symbols: str | None = None,
    mod: str | None = None,
    pooling: str | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    quantize: bool = False,
    key_added: str = Key.CELL_SENTENCE,
    copy: bool = False,
):
    """Write each cell as a sentence of gene symbols and embed it (Path 2, Cell2Sentence).

    The sentence lists the cell's ``n_genes`` top genes, space-separated, in descending
    order (ties broken by gene order, so results are deterministic); genes with zero
    counts are never listed. R's ``make.unique`` suffixes are stripped (``PNRC2.1`` ->
    ``PNRC2``). With ``embed=True`` the sentence is embedded by the frozen text encoder;
    sentences longer than the model's context are split into token chunks whose
    embeddings are averaged (:meth:`~scllm_dsc.encoders.TextEncoder.encode_long`), so no
    gene is dropped. Chunks are embedded in length-sorted batches padded only to the
    longest chunk of the batch, under :func:`torch.inference_mode`.

    ``rank_by="expression"`` (default) is the original Cell2Sentence order: the sentence
    reads as the cell's most abundant transcripts, which is what ``obs["cell_sentence"]``
    promises to users and to language models trained on Cell2Sentence text.
    ``rank_by="specificity"`` ranks genes by their log-normalised expression divided by the
    gene's mean over the dataset, so ubiquitous ribosomal and housekeeping genes give way to
    genes characteristic of the cell (in practice: rare genes detected with one or two
    counts). Measured with ``benchmarks/semantic_view.py`` (5-fold 15-NN accuracy of
    ``obs["cell_type"]`` on the embedded sentences, all-MiniLM-L6-v2, 600 cells each; the
    numbers are on the benchmarks page), expression order is clearly better. Sampling noise
    of low counts decides the specificity order, so it stays an option and ``"expression"``
    is the default.

    Parameters
    ----------
    {adata}
    n_genes
        Number of genes per sentence.
    {model}
    embed
        Embed the sentences into ``obsm["X_" + key_added]``. ``False`` only writes the text.
    {layer}
    rank_by
        ``"expression"`` or ``"specificity"`` (see above).
    gene_symbols
        Column of ``adata.var`` with the gene symbols to write; ``None`` uses ``var_names``.
    {mod}
    {pooling}
    max_length
        Context of the encoder in tokens; ``None`` uses the model's own.
    {batch_size}
    {device}
    quantize
        Dynamic int8 quantisation of the text model's linear layers (CPU only): faster, with
        embeddings close to but not equal to float32 ones (cached under their own key; see
        the benchmarks page for what it changes).
    {key_added}
        Sentences go to ``obs[key_added]``, embeddings to ``obsm["X_" + key_added]``,
        parameters to ``uns[key_added]["params"]``.
    {copy}

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``, with

    - ``obs["cell_sentence"]``: the sentences (str);
    - ``obsm["X_cell_sentence"]``: float32 (n_obs x d), L2-normalised, when ``embed``;
    - ``uns["cell_sentence"]["params"]``: the options, model and context used.
    """
    if rank_by not in RANK_BY:
        raise ValueError(f"`rank_by` must be one of {RANK_BY}, got {rank_by!r}.")
    if int(n_genes) < 1:
        raise ValueError(f"`n_genes` must be a positive integer, got {n_genes}.")
    n_genes = int(n_genes)
    data = adata.copy() if copy else adata
    ad = resolve_adata(data, mod)
    X = get_matrix(ad, layer)
    is_counts = check_expression(X, layer)
    symbols = strip_r_suffix(gene_names(ad, gene_symbols))

    logg.info(f"building cell sentences: top {n_genes} genes by {rank_by}")
    sentences = build_sentences(X, symbols, n_genes, rank_by, is_counts)
    params = {
        "n_genes": n_genes,
        "rank_by": rank_by,
        "layer": layer,
        "gene_symbols": gene_symbols,
        "embedded": bool(embed),
    }
    emb = None
    if embed:
        from ..encoders import get_encoder

        enc = get_encoder(
            model, pooling=pooling, device=device, batch_size=batch_size, max_length=max_length,
            quantize=quantize,
        )
        nonempty = np.array([len(s) > 0 for s in sentences], dtype=bool)
        emb = np.zeros((len(sentences), enc.dim), dtype=np.float32)
        if nonempty.any():
            todo = [s for s, ok in zip(sentences, nonempty, strict=True) if ok]
            emb[nonempty] = enc.encode_long(todo, desc="cell sentences")
        emb = l2_normalize(emb).astype(np.float32)
        if (~nonempty).any():
            n_empty = int((~nonempty).sum())
            logg.warning(f"{n_empty} cells express no gene; their embedding is zero.")
        params.update(
            model=enc.name, pooling=enc.pooling, max_length=enc.max_length, dim=int(enc.dim),
            quantize=bool(quantize),
        )

    # write everything at the end
    ad.obs[key_added] = pd.Series(sentences, index=ad.obs_names, dtype=object)
    if emb is not None:
        ad.obsm[Key.latent(key_added)] = emb
    ad.uns[key_added] = {"params": params}
    return data if copy else None
