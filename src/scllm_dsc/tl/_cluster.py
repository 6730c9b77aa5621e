"""``sd.tl.cluster``: cluster cells with the scLLM-DSC model."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

import numpy as np
from scanpy import logging as logg
from scipy import sparse

from .._constants import Key
from .._docs import inject_docs
from .._utils import get_matrix, require_counts, resolve_adata, to_csr

if TYPE_CHECKING:
    from anndata import AnnData

def _compute_gene_text(adata: AnnData, layer: str | None) -> np.ndarray:
    """Path 1 (``obsm["X_gene_text"]``) with :func:`~scllm_dsc.tl.embed_genes`' defaults, on a
    lightweight stand-in of ``adata``; a clear error naming the call to run if it fails."""
    import anndata as ad

    from . import embed_genes

    key = Key.X_GENE_TEXT
    X = get_matrix(adata, layer)
    if not (sparse.issparse(X) or isinstance(X, np.ndarray)):
        X = to_csr(X)  # backed: read into memory once
    work = ad.AnnData(X=X, obs=adata.obs[[]].copy(), var=adata.var.copy())
    call = f"sd.tl.embed_genes(adata{'' if layer is None else f', layer={layer!r}'})"
    try:
        logg.info(f"`adata.obsm[{key!r}]` is missing; computing it with `{call}`")
        embed_genes(work)
    except Exception as e:  # noqa: BLE001 - re-raised with the call to run
        raise RuntimeError(
            f"`adata.obsm[{key!r}]` (semantic view) is missing and computing it with "
            f"defaults failed ({type(e).__name__}: {e}). Run `{call}` yourself (see its "
            "options), or pass `use_semantic=False` to cluster on the structural view alone."
        ) from e
    if key not in work.obsm:
        raise RuntimeError(
            f"`{call}` did not write `adata.obsm[{key!r}]`. Run it yourself, or pass "
            "`use_semantic=False`."
        )
    return np.asarray(work.obsm[key], dtype=np.float32)


def _relabel_by_size(labels: np.ndarray, proba: np.ndarray):
    """Rename clusters 0..k-1 by decreasing size and drop the empty ones.

    Returns the new labels and the soft assignments restricted to the non-empty clusters
    (columns in label order, rows renormalised to sum to 1), so that the labels, the
    probability columns and the reported number of clusters always agree.
    """
    k = proba.shape[1]
    sizes = np.bincount(labels, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))  # biggest first, ties by index
    kept = order[sizes[order] > 0]
    rank = np.empty(k, dtype=int)
    rank[order] = np.arange(k)
    proba = np.asarray(proba[:, kept], dtype=np.float64)
    proba /= np.maximum(proba.sum(1, keepdims=True), np.finfo(np.float64).tiny)
    return rank[labels], proba, len(kept)


@inject_docs()
def cluster(
    adata: AnnData,
    n_clusters: int | None = None,
    *,
    key_added: str = Key.CLUSTER,
    random_state: int = 0,
    use_semantic: bool = True,
    layer: str | None = None,
    semantic_keys: tuple[str, ...] = (Key.X_GENE_TEXT, Key.X_CELL_SENTENCE),
    resolution: float = 1.0,
    n_neighbors: int = 15,
    n_pcs: int = 50,
    n_top_genes: int = 2000,
    n_hops: int = 2,
    n_latent: int = 16,
    semantic_weight: float = 0.15,
    target: Literal["sinkhorn", "dec"] = "sinkhorn",
    augment: bool = False,
    gene_graph: bool = False,
    max_epochs: int | None = None,
    pretrain_epochs: int | None = None,
    batch_size: int | None = 256,
    update_interval: int = 1,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
    return_model: bool = False,
    mod: str | None = None,
    copy: bool = False,
):
    """Cluster cells with scLLM-DSC (cross-modal deep structural clustering).

    Builds a sparse kNN cell graph, trains :class:`~scllm_dsc.model.SCLLMDSC` (structural
    view over the graph, aligned with the language-model semantic view) and assigns cells to
    clusters with its Student-t clustering head. Labels are never used.

    Parameters
    ----------
    {adata}
    n_clusters
        Number of clusters. ``None`` estimates it label-free on the pre-trained fused
        embedding: a Leiden over-clustering merged until marker genes tell every pair of
        connected clusters apart (:func:`~scllm_dsc.graph.overcluster_merge`); with
        ``model_kwargs={{"init": "leiden"}}``, Leiden at ``resolution``. A given number
        starts from k-means, or from the over-clustering merged to it when that leaves no
        cluster without markers, k-means does, and restarts reproduce the merge at least as
        well (``init`` of :class:`~scllm_dsc.model.SCLLMDSC`).
    {key_added}
    {random_state}
        The same seed on CPU gives identical labels.
    use_semantic
        Use the semantic view: Path 1 (``adata.obsm["X_gene_text"]``, computed with
        :func:`~scllm_dsc.tl.embed_genes` and its defaults when missing) and Path 2
        (``adata.obsm["X_cell_sentence"]``, used only when present: cell sentences are slow
        to embed, so they are never computed here; run :func:`~scllm_dsc.tl.cell_sentences`
        first to add them). ``False`` clusters on the structural view alone.
    {layer}
    semantic_keys
        ``adata.obsm`` keys of Path 1 and Path 2.
    resolution
        Leiden resolution for ``n_clusters=None`` with ``model_kwargs={{"init": "leiden"}}``.
    n_neighbors, n_pcs, n_top_genes
        Cell graph: kNN size, PCA components and highly variable genes.
    n_hops
        Graph propagation steps of the encoder input.
    n_latent
        Latent width (see :class:`~scllm_dsc.model.SCLLMDSC`).
    semantic_weight
        Weight of the semantic view in the fused latent.
    target
        Clustering target: ``"sinkhorn"`` (optimal transport, default) or ``"dec"``.
    augment
        Add scSiameseClu's dual augmentation: two sparse graph views (10% weakest edges
        dropped; personalised-PageRank diffusion) with Gaussian feature noise, encoded by the
        shared (Siamese) encoder, and a cross-view correlation refinement term.
    gene_graph
        Add scRCL's gene-graph refinement: a gene-gene kNN graph of the highly variable
        genes, a gene GCN (input: the genes' PCA profiles and, when
        ``adata.varm["gene_text"]`` exists, their text embeddings), cell-gene refinement of
        the structural latent and a neighbourhood-contrastive term.
    max_epochs, pretrain_epochs, batch_size, update_interval
        Training schedule (see :meth:`~scllm_dsc.model.SCLLMDSC.train`).
    accelerator, devices
        Lightning accelerator / devices (``"auto"``: CUDA when present, else CPU).
    model_kwargs, train_kwargs
        Further arguments of the model and of its ``train``.
    return_model
        Also return the trained model.
    {mod}
    {copy}

    Returns
    -------
    ``None`` (or a copy with ``copy=True``; plus the model with ``return_model=True``).
    Writes

    ``adata.obsp[f"{{key_added}}_connectivities"]``, ``adata.obsp[f"{{key_added}}_distances"]``
        The sparse cell graph used.
    ``adata.obsm[f"X_{{key_added}}"]``
        The fused latent (use with ``sc.pp.neighbors(adata, use_rep=...)``).
    ``adata.obs[key_added]``
        Cluster labels, categorical ``"0"`` .. ``"k-1"`` by decreasing size.
    ``adata.obsm[f"{{key_added}}_proba"]``
        Soft assignments (cells x k, rows sum to 1; columns in label order).
    ``adata.obsm[f"X_{{key_added}}_semantic"]``, ``adata.obsm[f"X_{{key_added}}_structural"]``
        With ``use_semantic=True``: both views projected into the shared space where they are
        aligned (L2-normalised), read by :func:`scllm_dsc.pl.alignment`.
    ``adata.uns[f"{{key_added}}_neighbors"]``
        The graph's entry in the layout of :func:`scanpy.pp.neighbors` (``connectivities_key``,
        ``distances_key``, ``params``): pass ``neighbors_key=f"{{key_added}}_neighbors"`` to
        :func:`scanpy.tl.leiden`, :func:`scanpy.tl.umap`...
    ``adata.uns[key_added]``
        ``params`` (of the graph and the clustering), training ``history`` and ``timings``
        (seconds spent on the graph, training and inference).
    """
    import anndata as ad
    import pandas as pd
    import torch

    from ..model import SCLLMDSC
    from ..model._scllmdsc import prepare_structural_view, write_structural_view

    adata = resolve_adata(adata, mod)
    if copy:
        adata = adata.copy()
    if n_clusters is not None:
        try:
            ok = not isinstance(n_clusters, bool | str) and int(n_clusters) == n_clusters
        except (TypeError, ValueError):
            ok = False
        if not ok or n_clusters < 2:
            raise ValueError(
                f"`n_clusters` must be an integer >= 2 or None (estimate it), got {n_clusters!r}."
            )
        if n_clusters >= adata.n_obs:
            raise ValueError(
                f"`n_clusters`={n_clusters} must be smaller than the number of cells "
                f"(n_obs={adata.n_obs}); pass fewer clusters or `n_clusters=None`."
            )
    X = require_counts(adata, layer, "sd.tl.cluster")

    # --- semantic view (computed on a stand-in; written at the end)
    semantic, new_semantic = {}, {}
    if use_semantic:
        keys = list(semantic_keys)
        if Key.X_CELL_SENTENCE in keys and Key.X_CELL_SENTENCE not in adata.obsm:
            # Path 2 is never computed unasked (an hour per 100k cells on a CPU)
            keys.remove(Key.X_CELL_SENTENCE)
            call = f"sd.tl.cell_sentences(adata{'' if layer is None else f', layer={layer!r}'})"
            if not keys:
                raise ValueError(
                    f"`adata.obsm[{Key.X_CELL_SENTENCE!r}]` is missing and is not computed by "
                    f"sd.tl.cluster (slow). Run `{call}` first, add {Key.X_GENE_TEXT!r} to "
                    "`semantic_keys`, or pass `use_semantic=False`."
                )
            logg.info(
                f"Path 2 (`adata.obsm[{Key.X_CELL_SENTENCE!r}]`) is absent: clustering with "
                f"Path 1 only. To add Path 2, run `{call}` before sd.tl.cluster (slow: it "
                "embeds one sentence per cell)."
            )
        missing = [k for k in keys if k not in adata.obsm]
        unknown = [k for k in missing if k != Key.X_GENE_TEXT]
        if unknown:
            raise KeyError(f"`adata.obsm` has no semantic embedding {unknown}.")
        if missing:
            new_semantic = {Key.X_GENE_TEXT: _compute_gene_text(adata, layer)}
        for k in keys:
            emb = new_semantic[k] if k in new_semantic else np.asarray(adata.obsm[k])
            if emb.shape[0] != adata.n_obs:
                raise ValueError(f"`adata.obsm[{k!r}]` has {emb.shape[0]} rows, not {adata.n_obs}.")
            semantic[k] = np.asarray(emb, dtype=np.float32)

    # --- structural view
    logg.info("building the sparse kNN cell graph")
    t0 = time.perf_counter()
    prep = prepare_structural_view(
        adata, layer, key_added, n_neighbors, n_pcs, n_top_genes, n_hops, random_state,
        augment=augment, gene_graph=gene_graph,
    )
    counts = to_csr(X)[:, np.flatnonzero(prep["highly_variable"])]
    work = ad.AnnData(
        X=sparse.csr_matrix(counts, dtype=np.float32),
        obs=pd.DataFrame(index=adata.obs_names.copy()),
        var=pd.DataFrame(index=adata.var_names[prep["highly_variable"]].copy()),
    )
    conn_key = Key.connectivities(key_added)
    work.obsp[conn_key] = prep["connectivities"]
    write_structural_view(work, prep)
    if gene_graph and Key.GENE_TEXT in adata.varm:
        work.varm[Key.GENE_TEXT] = np.asarray(adata.varm[Key.GENE_TEXT])[prep["highly_variable"]]
    for k, v in semantic.items():
        work.obsm[k] = v

    timings = {"graph": time.perf_counter() - t0}

    # --- model
    t0 = time.perf_counter()
    torch.manual_seed(random_state)
    SCLLMDSC.setup_anndata(
        work,
        semantic_keys=list(semantic) if use_semantic else None,
        graph_key=key_added,
        n_neighbors=n_neighbors,
        n_pcs=n_pcs,
        n_top_genes=n_top_genes,
        n_hops=n_hops,
        random_state=random_state,
        augment=augment,
        gene_graph=gene_graph,
    )
    model = SCLLMDSC(
        work,
        n_clusters=n_clusters,
        n_latent=n_latent,
        semantic_weight=semantic_weight,
        target=target,
        resolution=resolution,
        **(model_kwargs or {}),
    )
    model.train(
        max_epochs=max_epochs,
        pretrain_epochs=pretrain_epochs,
        batch_size=batch_size,
        update_interval=update_interval,
        accelerator=accelerator,
        devices=devices,
        random_state=random_state,
        **(train_kwargs or {}),
    )
    timings["training"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    latent = model.get_latent_representation()
    views = {}
    if use_semantic:
        views[Key.semantic(key_added)] = model.get_latent_representation(representation="semantic")
        views[Key.structural(key_added)] = model.get_latent_representation(
            representation="aligned_structural"
        )
    proba = model.predict(soft=True)
    k_model = proba.shape[1]
    labels, proba, k_used = _relabel_by_size(proba.argmax(1), proba)
    if k_used < k_model:
        logg.warning(
            f"{k_model - k_used} of {k_model} clusters ended up with no cells and were "
            f"dropped: {k_used} clusters are written."
        )
    timings["inference"] = time.perf_counter() - t0
    history = {
        key: np.asarray([float(v) for v in df.iloc[:, 0].to_numpy()], dtype=np.float64)
        for key, df in (model.history or {}).items()
    }

    # --- write everything at the end
    for k, v in new_semantic.items():
        adata.obsm[k] = v
    adata.obsp[conn_key] = prep["connectivities"]
    adata.obsp[Key.distances(key_added)] = prep["distances"]
    adata.obsm[Key.latent(key_added)] = latent.astype(np.float32)
    adata.obsm[Key.proba(key_added)] = proba.astype(np.float32)
    for k, v in views.items():
        adata.obsm[k] = np.asarray(v, dtype=np.float32)
    adata.obs[key_added] = pd.Categorical(
        labels.astype(str), categories=[str(i) for i in range(k_used)]
    )
    adata.uns[Key.neighbors(key_added)] = {
        "connectivities_key": conn_key,
        "distances_key": Key.distances(key_added),
        "params": dict(prep["params"]),
    }
    adata.uns[key_added] = {
        "params": {
            **prep["params"],
            # what the labels and the probability columns hold
            "n_clusters": int(k_used),
            # given by the user (-1: not given), estimated (-1: not estimated), trained
            "n_clusters_requested": -1 if n_clusters is None else int(n_clusters),
            "n_clusters_estimated": int(model.n_clusters) if n_clusters is None else -1,
            "n_clusters_trained": int(k_model),
            # the initial partition used: "kmeans", "merge" or "leiden"
            "init": model.init_choice_["chosen"],
            "resolution": float(resolution),
            "use_semantic": bool(use_semantic),
            "semantic_keys": list(semantic) if use_semantic else [],
            "semantic_paths": [
                {Key.X_GENE_TEXT: "path1", Key.X_CELL_SENTENCE: "path2"}.get(k, k)
                for k in (semantic if use_semantic else [])
            ],
            "semantic_weight": float(semantic_weight),
            "target": target,
            "augment": bool(augment),
            "gene_graph": bool(gene_graph),
            "n_hops": int(n_hops),
            "n_latent": int(n_latent),
            "random_state": int(random_state),
            "layer": "X" if layer is None else layer,
        },
        "history": history,
        "timings": timings,
    }
    logg.info(
        f"finished: {k_used} clusters in `adata.obs[{key_added!r}]`, latent in "
        f"`adata.obsm[{Key.latent(key_added)!r}]`"
    )
    if copy:
        return (adata, model) if return_model else adata
    return model if return_model else None
