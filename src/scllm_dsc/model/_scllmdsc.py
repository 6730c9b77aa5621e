"""The scvi-tools style scLLM-DSC model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, NumericalObsField, ObsmField
from scvi.dataloaders import DataSplitter
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from .._constants import Key
from .._utils import get_matrix, to_csr
from ..module import TENSOR_KEYS, SCLLMDSCModule
from ._progress import quiet_training, trainer_progress_kwargs
from ._query import cell_reference, cells_fingerprint, gene_reference, map_cells
from ._trainingplan import SCLLMDSCTrainingPlan

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

_FEATURES = "_scllm_dsc_features"
_NN_IDX = "_scllm_dsc_nn_indices"
_NN_W = "_scllm_dsc_nn_weights"
_DROP = "_scllm_dsc_features_drop"
_PPR = "_scllm_dsc_features_ppr"
_GENE_GRAPH = "_scllm_dsc_gene_graph"
_INDICES = "_indices"
_REFERENCE = "_scllm_dsc_reference"  # uns: what maps new cells' counts into the PCA
_QUERY = "_scllm_dsc_query"  # uns: set on AnnData prepared by `prepare_query_anndata`
_INIT_MAX_CELLS = 50_000
# init='auto': restarts of both candidate partitions whose agreement is compared
_INIT_RESTARTS = 4
# above this many cells the clustering target is computed per mini-batch (no full passes)
_FULL_TARGET_MAX_CELLS = 200_000


def default_epochs(n_obs: int, batch_size: int = 256, n_steps: int = 600) -> int:
    """Total epochs (pre-training + joint) for ``n_obs`` cells: about ``n_steps`` optimiser
    steps, clipped to [20, 200] epochs.

    Small data gets more passes, large data fewer (each epoch already holds many mini-batches),
    so run time grows slowly with the number of cells. :meth:`SCLLMDSC.train` uses
    :func:`default_steps`, which caps the 20-epoch floor on large data.
    """
    steps_per_epoch = max(1, n_obs // max(batch_size, 1))
    return int(np.clip(round(n_steps / steps_per_epoch), 20, 200))


def default_steps(
    n_obs: int, batch_size: int = 256, n_steps: int = 600, max_floor_steps: int = 1000
) -> int:
    """Total optimiser steps (pre-training + joint) of the default schedule.

    :func:`default_epochs` in steps, except that its 20-epoch floor is capped at
    ``max(n_steps, max_floor_steps)`` steps: below about 12,800 cells (at batch size 256)
    the schedule is the whole-epoch one, above it training takes a fixed number of steps
    whatever the number of cells (100k cells no longer run 20 full epochs).
    """
    steps_per_epoch = max(1, n_obs // max(batch_size, 1))
    epochs = default_epochs(n_obs, batch_size, n_steps)
    return int(min(epochs * steps_per_epoch, max(n_steps, max_floor_steps)))


def prepare_structural_view(
    adata: AnnData,
    layer: str | None = None,
    graph_key: str = Key.CLUSTER,
    n_neighbors: int = 15,
    n_pcs: int = 50,
    n_top_genes: int = 2000,
    n_hops: int = 2,
    random_state: int = 0,
    *,
    connectivities=None,
    augment: bool = False,
    gene_graph: bool = False,
) -> dict:
    """Compute the cell graph, propagated features and neighbour table (nothing written).

    Returns a dict with ``connectivities``, ``distances``, ``params`` (graph), ``pca``,
    ``features`` (cells x n_pcs*(n_hops+1)), ``nn_indices``, ``nn_weights`` (cells x
    n_neighbors-1), ``highly_variable``; with ``augment`` also ``features_drop`` and
    ``features_ppr`` (the two graph views of the same width); with ``gene_graph`` also
    ``gene_graph`` (edge list and gene profiles of the highly variable genes). A given
    ``connectivities`` matrix replaces the kNN graph built from the PCA.
    """
    from ..graph import (
        build_graph,
        drop_weak_edges,
        neighbor_table,
        normalized_adjacency,
        ppr_propagate,
        propagate,
    )
    from ..graph import gene_graph as make_gene_graph

    g = build_graph(
        adata,
        layer,
        n_neighbors=n_neighbors,
        n_pcs=n_pcs,
        n_top_genes=n_top_genes,
        random_state=random_state,
    )
    conn = g.connectivities if connectivities is None else sparse.csr_matrix(connectivities)
    scale = float(np.std(g.pca)) or 1.0
    pca = g.pca / scale
    A = normalized_adjacency(conn)  # shared by the features and the PPR view
    feats = propagate(pca, conn, n_hops=n_hops, adjacency=A).astype(np.float32)
    k = max(1, g.params["n_neighbors"] - 1)
    idx, w = neighbor_table(conn, k)
    out = {
        "connectivities": conn,
        "distances": g.distances,
        "params": g.params,
        "pca": g.pca,
        "features": feats,
        "nn_indices": idx.astype(np.int64),
        "nn_weights": w,
        "highly_variable": g.highly_variable,
        "reference": gene_reference(
            adata.var_names, g.highly_variable, g.pca_mean, g.pca_loadings, scale,
            g.params["n_neighbors"], n_hops, 1e4,
        ),
    }
    if augment:
        out["features_drop"] = propagate(pca, drop_weak_edges(conn, 0.1), n_hops).astype(
            np.float32
        )
        out["features_ppr"] = ppr_propagate(pca, conn, n_hops, adjacency=A).astype(np.float32)
    if gene_graph:
        edge_index, edge_weight = make_gene_graph(g.gene_profiles)
        out["gene_graph"] = {
            "edge_index": edge_index,
            "edge_weight": edge_weight,
            "profiles": g.gene_profiles / (float(np.std(g.gene_profiles)) or 1.0),
            "genes": np.asarray(adata.var_names[g.highly_variable], dtype=str),
        }
    return out


def write_structural_view(adata: AnnData, prep: dict) -> None:
    """Store the private model inputs of :func:`prepare_structural_view` in ``adata``."""
    adata.obsm[_FEATURES] = prep["features"]
    adata.obsm[_NN_IDX] = prep["nn_indices"]
    adata.obsm[_NN_W] = prep["nn_weights"]
    for key, obsm_key in ((_DROP, "features_drop"), (_PPR, "features_ppr")):
        if obsm_key in prep:
            adata.obsm[key] = prep[obsm_key]
    if "gene_graph" in prep:
        adata.uns[_GENE_GRAPH] = dict(prep["gene_graph"])
    if "reference" in prep:
        adata.uns[_REFERENCE] = dict(prep["reference"])


class SCLLMDSC(BaseModelClass):
    """LLM-knowledge enhanced cross-modal deep structural clustering (scLLM-DSC).

    Structural view: an encoder over SGC/SIGN-propagated PCA features of a sparse kNN graph,
    an NB reconstruction of the counts and a normalised-cut loss over the graph's edges.
    Semantic view: the language-model cell embeddings (Path 1, ``X_gene_text``; Path 2,
    ``X_cell_sentence``). Both are aligned by projection heads with symmetric InfoNCE; a
    Student-t clustering head on the fused latent is trained towards an optimal-transport
    (Sinkhorn) or DEC target after a pre-training phase. Training is mini-batch, so memory
    grows linearly with the number of cells.

    The NB decoder reconstructs every gene of ``adata``: as with scvi-tools models, subset
    the data to its highly variable genes first (:func:`scllm_dsc.tl.cluster` trains on the
    2,000 it selects). On all genes, trainings with different seeds agree markedly less than
    on the highly variable genes (the benchmarks page, "New cells").

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_clusters
        Number of clusters. ``None`` estimates it label-free on the pre-trained fused latent:
        a Leiden over-clustering merged until marker genes tell every pair of connected
        clusters apart (:func:`~scllm_dsc.graph.overcluster_merge`); with ``init="leiden"``,
        Leiden at ``resolution``.
    n_latent
        Width of the structural latent and the shared projection space. The default, 16, is
        the paper backbone's width (measurements: the benchmarks page).
    n_hidden
        Hidden width of encoder and decoder.
    semantic_weight
        Weight of the semantic head in the fused latent (ignored without semantic view): the
        share of squared distances it contributes (measurements: the benchmarks page).
    path_weight
        Weight of Path 1 in ``Z_text = w z1 + (1 - w) z2``.
    target
        Clustering target: ``"sinkhorn"`` (optimal transport on Q^5, default) or ``"dec"``.
    resolution
        Leiden resolution used when ``n_clusters`` is ``None`` and ``init="leiden"``.
    init
        How the cluster centres are initialised from the pre-trained fused latent, computed
        on at most 50,000 sampled cells:

        - ``"merge"``: a Leiden over-clustering merged to ``n_clusters`` on the latent's kNN
          graph by :func:`~scllm_dsc.graph.overcluster_merge` (most connected pair first,
          pairs that marker genes of the registered counts tell apart last); with
          ``n_clusters=None`` merged until every connected pair has markers, which sets the
          number of clusters.
        - ``"kmeans"``: k-means (10 restarts).
        - ``"auto"`` (default): with ``n_clusters=None`` as ``"merge"``; at a given
          ``n_clusters`` both of the above, and the merge partition is kept when marker genes
          (at least 10) tell each of its clusters apart from its most connected neighbour
          while some k-means cluster is not told apart so (k-means splits a large type when
          it must place centres for small ones) and four restarts of each (other random
          states) reproduce the merge at least as well as k-means (mean pairwise adjusted
          Rand index; an arbitrary split is not reproduced, while clusters with few markers
          that every k-means restart finds are structure in shallow counts), else k-means.
        - ``"leiden"``: Leiden with the resolution bisected to ``n_clusters``; with
          ``n_clusters=None``: Leiden at ``resolution``.

        The partition used (and, for ``"auto"`` at a given ``n_clusters``, both candidates'
        smallest marker count and number of clusters without markers, and their agreement
        over restarts where it was needed) is in ``model.init_choice_`` after training.

        Measurements: the benchmarks page.
    gene_text_init
        With a gene graph (``setup_anndata(gene_graph=True)``): append the genes' text
        embeddings (``adata.varm["gene_text"]``, when present) to their expression profiles
        as the gene GCN's input, which joins scRCL's gene graph with scLLM-DSC's knowledge.
    **module_kwargs
        Passed to :class:`~scllm_dsc.module.SCLLMDSCModule` (loss weights, ``tau``...).

    Examples
    --------
    >>> sd.model.SCLLMDSC.setup_anndata(adata, layer="counts")
    >>> model = sd.model.SCLLMDSC(adata, n_clusters=8)
    >>> model.train()
    >>> adata.obsm["X_scllm_dsc"] = model.get_latent_representation()
    >>> adata.obs["scllm_dsc"] = model.predict().astype(str)

    New cells are mapped onto the training cells (see :meth:`prepare_query_anndata`):

    >>> model.save("ref_model")
    >>> query_model = sd.model.SCLLMDSC.load("ref_model", adata=new_cells)
    >>> new_cells.obs["scllm_dsc"] = query_model.predict().astype(str)
    """

    _module_cls = SCLLMDSCModule
    _training_plan_cls = SCLLMDSCTrainingPlan
    _data_splitter_cls = DataSplitter
    _train_runner_cls = TrainRunner

    def __init__(
        self,
        adata: AnnData,
        n_clusters: int | None = None,
        n_latent: int = 16,
        n_hidden: int = 128,
        semantic_weight: float = 0.15,
        path_weight: float = 0.5,
        target: Literal["sinkhorn", "dec"] = "sinkhorn",
        resolution: float = 1.0,
        init: Literal["auto", "kmeans", "merge", "leiden"] = "auto",
        gene_text_init: bool = True,
        **module_kwargs,
    ):
        super().__init__(adata)
        if n_clusters is not None and int(n_clusters) < 2:
            raise ValueError(f"`n_clusters` must be >= 2 or None, got {n_clusters}.")
        if init not in ("auto", "kmeans", "merge", "leiden"):
            raise ValueError(
                f"`init` must be 'auto', 'kmeans', 'merge' or 'leiden', got {init!r}."
            )
        n_cells = self.summary_stats.n_cells
        is_query = bool(self.adata.uns.get(_QUERY, False))
        if n_clusters is not None and int(n_clusters) >= n_cells and not is_query:
            raise ValueError(
                f"`n_clusters`={n_clusters} must be smaller than the number of cells "
                f"({n_cells}); pass fewer clusters or `n_clusters=None`."
            )
        if target not in ("sinkhorn", "dec"):
            raise ValueError(f"`target` must be 'sinkhorn' or 'dec', got {target!r}.")
        n_features = self.adata_manager.get_from_registry(TENSOR_KEYS.FEATURES).shape[1]
        n_text = 0
        reg = self.adata_manager.data_registry
        if TENSOR_KEYS.TEXT_1 in reg:
            n_text = self.adata_manager.get_from_registry(TENSOR_KEYS.TEXT_1).shape[1]
            if TENSOR_KEYS.TEXT_2 in reg:
                n2 = self.adata_manager.get_from_registry(TENSOR_KEYS.TEXT_2).shape[1]
                if n2 != n_text:
                    raise ValueError(
                        f"The two semantic embeddings have different widths ({n_text} vs {n2}); "
                        "compute both paths with the same text model."
                    )
        setup_args = self.adata_manager.registry.get("setup_args", {})
        gene_inputs = (
            _gene_graph_inputs(self.adata, gene_text_init) if setup_args.get("gene_graph") else {}
        )
        self.n_clusters = None if n_clusters is None else int(n_clusters)
        # what maps new cells onto these (saved with the model; a query model gets the
        # reference's when loaded)
        self.reference_ = None if is_query else _reference_of(self.adata, setup_args)
        self.target_kind = target
        self.resolution = resolution
        self.init = init
        self.module = self._module_cls(
            n_genes=self.summary_stats.n_vars,
            n_features=n_features,
            n_text=n_text,
            n_clusters=self.n_clusters or 0,
            n_latent=n_latent,
            n_hidden=n_hidden,
            semantic_weight=semantic_weight,
            path_weight=path_weight,
            augment=TENSOR_KEYS.FEATURES_DROP in reg,
            **gene_inputs,
            **module_kwargs,
        )
        self._model_summary_string = (
            f"SCLLMDSC: n_clusters={n_clusters}, n_latent={n_latent}, "
            f"semantic={'yes' if n_text else 'no'} (width {n_text}), target={target}, "
            f"augment={self.module.augment}, gene_graph={self.module.use_gene_graph}"
        )
        self.init_params_ = self._get_init_params(locals())

    # ---------------------------------------------------------------------------- setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        semantic_keys: Sequence[str] | None = (Key.X_GENE_TEXT, Key.X_CELL_SENTENCE),
        graph_key: str = Key.CLUSTER,
        n_neighbors: int = 15,
        n_pcs: int = 50,
        n_top_genes: int = 2000,
        n_hops: int = 2,
        random_state: int = 0,
        augment: bool = False,
        gene_graph: bool = False,
        **kwargs,
    ):
        """Register counts, semantic embeddings and the cell graph.

        If ``adata.obsp[f"{graph_key}_connectivities"]`` is absent, the sparse kNN graph is
        built (see :func:`scllm_dsc.graph.build_graph`) and written to
        ``adata.obsp[f"{graph_key}_connectivities"]`` / ``_distances`` and
        ``adata.uns[f"{graph_key}_neighbors"]``. Graph-propagated features and a fixed-width
        neighbour table are stored in private ``adata.obsm`` keys (``_scllm_dsc_*``) and
        registered. What maps new cells into the same PCA (highly variable genes, centre,
        loadings, scale) is stored in ``adata.uns["_scllm_dsc_reference"]`` and kept with the
        trained model (see :meth:`prepare_query_anndata`).

        Parameters
        ----------
        adata
            Annotated data matrix with raw counts.
        layer
            Layer with raw counts; ``None`` uses ``adata.X``.
        semantic_keys
            ``adata.obsm`` keys of Path 1 and Path 2 (one or two keys), fused as
            ``w z1 + (1 - w) z2``. ``None`` registers no semantic view (structural only).
        graph_key
            Prefix of the graph's ``adata.obsp`` keys.
        n_neighbors, n_pcs, n_top_genes, n_hops
            Graph and propagation parameters.
        random_state
            Seed of PCA and neighbour search.
        augment
            Also register two augmented graph views for the Siamese term (scSiameseClu
            ideas): propagation over the graph with its 10% weakest edges dropped, and over
            its personalised-PageRank diffusion (``adata.obsm["_scllm_dsc_features_drop"]``,
            ``["_scllm_dsc_features_ppr"]``).
        gene_graph
            Also store a gene-gene kNN graph of the highly variable genes for the gene-graph
            refinement (scRCL ideas), in ``adata.uns["_scllm_dsc_gene_graph"]``.
        """
        setup_method_args = cls._get_setup_method_args(**locals())

        semantic_keys = [semantic_keys] if isinstance(semantic_keys, str) else semantic_keys
        semantic_keys = list(semantic_keys or [])
        if len(semantic_keys) > 2:
            raise ValueError("`semantic_keys` takes at most two keys (Path 1, Path 2).")
        for key in semantic_keys:
            if key not in adata.obsm:
                raise KeyError(
                    f"`adata.obsm[{key!r}]` not found. Compute the semantic view first with "
                    "`sd.tl.embed_genes(adata)` (Path 1, 'X_gene_text') and "
                    "`sd.tl.cell_sentences(adata)` (Path 2, 'X_cell_sentence'), or pass "
                    "`semantic_keys=None` for the structural view alone."
                )
            if not np.all(np.isfinite(np.asarray(adata.obsm[key]))):
                raise ValueError(f"`adata.obsm[{key!r}]` contains NaN or infinite values.")

        if adata.n_vars > max(2 * n_top_genes, 3000) and not adata.uns.get(_QUERY, False):
            logger.warning(
                "The model reconstructs all %d genes of `adata`. Subset the counts to "
                "about %d highly variable genes first (select them on a log-normalised "
                "copy), as `sd.tl.cluster` does: training is faster and more reproducible.",
                adata.n_vars, n_top_genes,
            )
        conn_key = Key.connectivities(graph_key)
        needed = [_FEATURES, _NN_IDX, _NN_W] + ([_DROP, _PPR] if augment else [])
        have = (
            (conn_key in adata.obsp or adata.uns.get(_QUERY, False))
            and all(key in adata.obsm for key in needed)
            and (not gene_graph or _GENE_GRAPH in adata.uns)
        )
        if not have:
            user_graph = adata.obsp[conn_key] if conn_key in adata.obsp else None
            prep = prepare_structural_view(
                adata, layer, graph_key, n_neighbors, n_pcs, n_top_genes, n_hops, random_state,
                connectivities=user_graph, augment=augment, gene_graph=gene_graph,
            )
            if user_graph is None:
                adata.obsp[conn_key] = prep["connectivities"]
                adata.obsp[Key.distances(graph_key)] = prep["distances"]
                adata.uns[Key.neighbors(graph_key)] = {
                    "connectivities_key": conn_key,
                    "distances_key": Key.distances(graph_key),
                    "params": prep["params"],
                }
            write_structural_view(adata, prep)
        adata.obs[_INDICES] = np.arange(adata.n_obs)

        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            ObsmField(TENSOR_KEYS.FEATURES, _FEATURES),
            ObsmField(TENSOR_KEYS.NN_IDX, _NN_IDX),
            ObsmField(TENSOR_KEYS.NN_W, _NN_W),
            NumericalObsField(REGISTRY_KEYS.INDICES_KEY, _INDICES),
        ]
        if augment:
            fields += [
                ObsmField(TENSOR_KEYS.FEATURES_DROP, _DROP),
                ObsmField(TENSOR_KEYS.FEATURES_PPR, _PPR),
            ]
        for reg_key, key in zip(TENSOR_KEYS.TEXT, semantic_keys, strict=False):  # 1 or 2 keys
            fields.append(ObsmField(reg_key, key))
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        with quiet_training():
            adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------------- training
    def _run_phase(
        self,
        max_epochs: int,
        batch_size: int,
        accelerator,
        devices,
        plan_kwargs: dict,
        datasplitter_kwargs: dict,
        refresh_target=None,
        update_interval: int = 1,
        max_steps: int | None = None,
        stage: str = "training",
        **trainer_kwargs,
    ):
        n = self.adata.n_obs
        ds_kwargs = {"drop_last": n > batch_size, **datasplitter_kwargs}
        splitter = self._data_splitter_cls(
            self.adata_manager,
            train_size=1.0,
            validation_size=0.0,
            batch_size=batch_size,
            shuffle_set_split=False,
            **ds_kwargs,
        )
        plan = self._training_plan_cls(
            self.module,
            refresh_target=refresh_target,
            update_interval=update_interval,
            **plan_kwargs,
        )
        trainer_kwargs.setdefault("early_stopping", False)
        trainer_kwargs.setdefault("enable_checkpointing", False)
        if max_steps is not None:  # a step budget: the last epoch may be partial
            trainer_kwargs["max_steps"] = int(max_steps)
        n_batches = n // batch_size if ds_kwargs["drop_last"] else -(-n // batch_size)
        trainer_kwargs = trainer_progress_kwargs(stage, trainer_kwargs, n_batches)
        with quiet_training():  # the Trainer logs its hardware when it is created
            runner = self._train_runner_cls(
                self,
                training_plan=plan,
                data_splitter=splitter,
                max_epochs=max_epochs,
                accelerator=accelerator,
                devices=devices,
                **trainer_kwargs,
            )
            return runner()

    def train(
        self,
        max_epochs: int | None = None,
        pretrain_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        batch_size: int | None = 256,
        update_interval: int = 1,
        random_state: int | None = None,
        plan_kwargs: dict | None = None,
        datasplitter_kwargs: dict | None = None,
        max_steps: int | None = None,
        target_update: Literal["auto", "full", "batch"] = "auto",
        **trainer_kwargs,
    ):
        """Pre-train (reconstruction, cut, alignment), initialise centres, then train jointly.

        Parameters
        ----------
        max_epochs
            Total epochs of both phases. ``None`` (and ``max_steps=None``): the step budget
            of :func:`default_steps`, which is a whole number of epochs below about 12,800
            cells (the :func:`default_epochs` schedule) and a fixed number of steps above.
        pretrain_epochs
            Epochs of the pre-training phase (default: half of ``max_epochs``, or half of
            the steps of a step budget).
        accelerator, devices
            Lightning accelerator and devices; ``"auto"`` picks CUDA when present, else CPU.
        batch_size
            Cells per mini-batch; ``None`` trains full-batch (small data only).
        update_interval
            With a cell-indexed target (``target_update="full"``), the clustering target is
            recomputed over all cells every ``update_interval`` epochs of the joint phase (an
            inference pass over the cells, then the target on the model's device);
            measurements of 1 (the default) against 5 are on the benchmarks page.
        random_state
            Seed of torch, numpy and the centre initialisation during training. The initial
            weights are drawn when the model is created: for identical results set
            ``scvi.settings.seed`` (or call ``torch.manual_seed``) before creating it
            (:func:`scllm_dsc.tl.cluster` does this for you).
        plan_kwargs
            Passed to the training plan, ``SCLLMDSCTrainingPlan`` (``lr``...).
        datasplitter_kwargs
            Passed to :class:`scvi.dataloaders.DataSplitter`.
        max_steps
            Total optimiser steps of both phases instead of ``max_epochs`` (pre-training
            takes half unless ``pretrain_epochs`` is given).
        target_update
            How the clustering target is refreshed: ``"full"`` (over all cells every
            ``update_interval`` epochs, as above), ``"batch"`` (from each mini-batch's own
            soft assignments at every step: no pass over all cells, for millions of cells)
            or ``"auto"`` (``"full"`` up to 200,000 cells, ``"batch"`` above).
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer`.

        Notes
        -----
        Stopping never looks at labels: the model of the final epoch is kept.
        """
        import scvi

        n = self.adata.n_obs
        if random_state is not None:
            with quiet_training():  # Lightning logs "Seed set to ..."
                scvi.settings.seed = int(random_state)
        self._random_state = 0 if random_state is None else int(random_state)
        if target_update not in ("auto", "full", "batch"):
            raise ValueError(
                f"`target_update` must be 'auto', 'full' or 'batch', got {target_update!r}."
            )
        if target_update == "auto":
            target_update = "full" if n <= _FULL_TARGET_MAX_CELLS else "batch"
        batch_size = n if batch_size is None else int(min(batch_size, n))
        steps_per_epoch = max(1, n // batch_size) if n > batch_size else 1
        pre_steps = joint_steps = None  # epoch schedule unless a step budget applies
        if max_epochs is None and max_steps is None and pretrain_epochs is None:
            total = default_steps(n, batch_size)
            if total % steps_per_epoch == 0:  # whole epochs: the epoch schedule, unchanged
                max_epochs = total // steps_per_epoch
            else:
                max_steps = total
        if max_steps is not None:
            max_steps = int(max_steps)
            if max_steps < 1:
                raise ValueError(f"`max_steps` must be >= 1, got {max_steps}.")
            pre_steps = (
                max_steps // 2
                if pretrain_epochs is None
                else min(int(pretrain_epochs) * steps_per_epoch, max_steps)
            )
            joint_steps = max_steps - pre_steps
            pretrain_epochs = -(-pre_steps // steps_per_epoch)
            max_epochs = pretrain_epochs + -(-joint_steps // steps_per_epoch)
        else:
            max_epochs = (
                default_epochs(n, batch_size) if max_epochs is None else int(max_epochs)
            )
            pretrain_epochs = max_epochs // 2 if pretrain_epochs is None else int(pretrain_epochs)
            if not 0 <= pretrain_epochs <= max_epochs or max_epochs < 1:
                raise ValueError(
                    f"Need 1 <= max_epochs and 0 <= pretrain_epochs <= max_epochs, got "
                    f"max_epochs={max_epochs}, pretrain_epochs={pretrain_epochs}."
                )
        plan_kwargs = dict(plan_kwargs or {})
        datasplitter_kwargs = dict(datasplitter_kwargs or {})
        common = dict(
            batch_size=batch_size,
            accelerator=accelerator,
            devices=devices,
            plan_kwargs=plan_kwargs,
            datasplitter_kwargs=datasplitter_kwargs,
            **trainer_kwargs,
        )
        # all cells' propagated features are only read by the neighbour terms
        if self.module.needs_neighbours:
            feats = torch.as_tensor(
                np.asarray(self.adata_manager.get_from_registry(TENSOR_KEYS.FEATURES)),
                dtype=torch.float32,
            )
            self.module.set_graph_features(feats)
        sigint = _sigint_handler()
        try:
            self.module.clustering = False
            self.module.set_target(None)
            self.module.set_batch_target(None)
            if pretrain_epochs > 0 and (pre_steps is None or pre_steps > 0):
                self._run_phase(
                    pretrain_epochs, max_steps=pre_steps, stage="pre-training", **common
                )
            self._init_clusters()
            joint = max_epochs - pretrain_epochs
            if joint > 0 and (joint_steps is None or joint_steps > 0):
                self.module.train()
                self.module.clustering = True
                if target_update == "batch":
                    self.module.set_batch_target(self._target_fn())
                self._run_phase(
                    joint,
                    refresh_target=self._refresh_target if target_update == "full" else None,
                    update_interval=update_interval,
                    max_steps=joint_steps,
                    stage="joint training",
                    **common,
                )
        except SystemExit as e:
            # Lightning answers Ctrl+C with sys.exit(1) after a graceful shutdown; give the
            # caller (a notebook) the KeyboardInterrupt back instead of an exit.
            if isinstance(e.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt(
                    "training interrupted; the model keeps the weights of the last step "
                    "(call `train()` again to train it further)"
                ) from None
            raise
        finally:
            self.module.clustering = False
            self.module.set_target(None)
            self.module.set_batch_target(None)
            self.module.graph_features = torch.zeros(0, self.module.n_features)
            self.module.eval()
            _restore_sigint(sigint)
        self.is_trained_ = True
        self.module.eval()

    def _init_clusters(self) -> None:
        """Centres of the clusters of the pre-trained fused latent (see ``init``)."""
        from ..graph import leiden_labels, leiden_n_clusters, overcluster_merge

        n = self.adata.n_obs
        rs = getattr(self, "_random_state", 0)
        rng = np.random.default_rng(rs)
        # the initial partition is computed on at most `_INIT_MAX_CELLS` cells (only those
        # are embedded): enough to place the centres, and it keeps the cost bounded on
        # millions of cells
        sub = None
        if n > _INIT_MAX_CELLS:
            sub = np.sort(rng.choice(n, _INIT_MAX_CELLS, replace=False))
        zs = self.get_latent_representation(indices=sub)
        self.init_choice_ = {"chosen": self.init}
        if self.init == "merge" or (self.n_clusters is None and self.init in ("kmeans", "auto")):
            labels = overcluster_merge(zs, self._init_counts(sub), self.n_clusters,
                                       random_state=rs)
            self.init_choice_ = {"chosen": "merge"}
        elif self.init == "auto":
            labels = self._pick_partition(zs, sub, rs)
        elif self.n_clusters is None:
            labels = leiden_labels(zs, self.resolution, random_state=rs)
        elif self.init == "kmeans":
            from sklearn.cluster import KMeans

            labels = KMeans(n_clusters=self.n_clusters, n_init=10, random_state=rs).fit_predict(zs)
        else:
            labels = leiden_n_clusters(zs, self.n_clusters, random_state=rs)
        if self.n_clusters is None and int(labels.max()) + 1 < 2:
            raise RuntimeError(
                "The initial partition of the pre-trained latent has a single cluster; pass "
                "`n_clusters` (or `init='leiden'` with a higher `resolution`)."
            )
        k = int(labels.max()) + 1
        centers = np.stack([zs[labels == j].mean(0) for j in range(k)])
        if self.n_clusters is None:
            self.n_clusters = k
            self.init_params_["non_kwargs"]["n_clusters"] = k
        elif k != self.n_clusters:
            # Leiden found no resolution giving exactly k: split/merge with k-means on centres
            from sklearn.cluster import KMeans

            logger.info("Leiden gave %d clusters instead of %d; completing with k-means.", k,
                        self.n_clusters)
            km = KMeans(n_clusters=self.n_clusters, n_init=10, random_state=rs).fit(zs)
            centers = km.cluster_centers_
        self.module.init_centers(torch.as_tensor(centers, dtype=torch.float32))

    def _init_counts(self, sub):
        counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        return counts if sub is None else counts[sub]

    def _pick_partition(self, zs: np.ndarray, sub, rs: int) -> np.ndarray:
        """Over-cluster-and-merge at ``n_clusters`` when marker genes tell every one of its
        clusters apart from its most connected neighbour and not every k-means cluster, and
        the merge is at least as reproducible over restarts as k-means; k-means otherwise."""
        from itertools import combinations

        from sklearn.cluster import KMeans
        from sklearn.metrics import adjusted_rand_score

        from ..graph._leiden import _graph
        from ..graph._merge import _overcluster_merge, log_normalize, separation

        # one kNN graph and one log-normalisation for the merges and both separations
        tmp = _graph(zs, 15, rs)
        Xl = log_normalize(self._init_counts(sub))
        runs = {
            "kmeans": lambda r: KMeans(n_clusters=self.n_clusters, n_init=10,
                                       random_state=r).fit_predict(zs),
            "merge": lambda r: _overcluster_merge(tmp, Xl, self.n_clusters, random_state=r),
        }
        parts = {m: run(rs) for m, run in runs.items()}
        W = tmp.obsp["connectivities"]
        sep = {m: separation(lab, W, Xl) for m, lab in parts.items()}
        choice = {m: list(v) for m, v in sep.items()}
        # k-means splits a large type where it must place k centres in data with small
        # types (its clusters without markers); the merge keeps it whole and reaches k only
        # with splits that genes support. Where neither is clean (continua, subtypes told
        # apart by few genes) k-means' partition is kept.
        best = "merge" if sep["merge"][1] == 0 < sep["kmeans"][1] else "kmeans"
        if best == "merge":
            # such a split is arbitrary, so restarts disagree on it; k-means clusters that
            # restarts reproduce at least as well as the merge's are structure, and their few
            # markers a matter of shallow counts
            stab = {}
            for m, run in runs.items():
                labs = [parts[m], *(run(rs + r) for r in range(1, _INIT_RESTARTS))]
                stab[m] = float(np.mean([adjusted_rand_score(a, b)
                                         for a, b in combinations(labs, 2)]))
            best = "merge" if stab["merge"] >= stab["kmeans"] else "kmeans"
            choice["stability"] = stab
        self.init_choice_ = {"chosen": best, **choice}
        logger.info("Initial partition: %s (per candidate, the smallest marker count and the "
                    "clusters without markers; agreement over restarts): %s.", best, choice)
        return parts[best]

    def _target_fn(self):
        from ..nn import dec_target, sinkhorn_target

        return sinkhorn_target if self.target_kind == "sinkhorn" else dec_target

    @torch.no_grad()
    def _refresh_target(self) -> None:
        """Recompute the target P over all cells (in chunks) from the current Q, on the
        module's device."""
        dev = self.module.centers.device
        q = torch.as_tensor(self._soft_assignments(self.adata, batch_size=4096)).to(dev)
        # float64 where the device has it cheaply (CPU, CUDA); the target is kept there
        q = q.double() if dev.type != "mps" else q
        self.module.set_target(self._target_fn()(q).float())

    # ----------------------------------------------------------------------- inference
    @torch.inference_mode()
    def _collect(self, adata, indices, batch_size, fn) -> np.ndarray:
        adata = self._validate_anndata(adata)
        # only what inference reads: no counts densified per batch unless the gene graph
        # needs them, so a pass over millions of cells stays cheap
        fields = self.module.inference_fields(self.adata_manager.data_registry)
        dl = self._make_data_loader(
            adata=adata,
            indices=indices,
            batch_size=batch_size or 1024,
            shuffle=False,
            data_and_attributes=fields,
        )
        out = []
        for tensors in dl:
            inf = self.module.inference(**self.module._get_inference_input(tensors))
            out.append(fn(inf).detach().cpu())
        return torch.cat(out).numpy()

    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        representation: Literal["fused", "structural", "semantic", "aligned_structural"] = "fused",
    ) -> np.ndarray:
        """Latent representation of each cell.

        Parameters
        ----------
        adata
            AnnData registered with :meth:`setup_anndata` (default: the model's).
        indices
            Cells to use (default: all).
        batch_size
            Cells per forward pass.
        representation
            ``"fused"`` (clustered latent), ``"structural"`` (``z_feat``), ``"semantic"``
            (projected ``Z_text``) or ``"aligned_structural"`` (``z_feat`` projected into the
            space shared with ``"semantic"``).
        """
        if representation == "fused":
            key = "z"
        elif representation == "structural":
            key = "z_feat"
        elif representation == "semantic":
            if not self.module.use_semantic:
                raise ValueError("This model has no semantic view (set up without semantic keys).")
            key = "h_text"
        elif representation == "aligned_structural":
            if not self.module.use_semantic:
                raise ValueError("This model has no semantic view (set up without semantic keys).")
            key = "h_feat"
        else:
            raise ValueError(
                f"`representation` must be 'fused', 'structural', 'semantic' or "
                f"'aligned_structural', got "
                f"{representation!r}."
            )
        return self._collect(adata, indices, batch_size, lambda inf: inf[key])

    def _soft_assignments(self, adata=None, indices=None, batch_size=None) -> np.ndarray:
        if self.module.n_clusters == 0:
            raise RuntimeError("The clustering head is not initialised; call `train()` first.")
        return self._collect(adata, indices, batch_size, lambda inf: inf["q"])

    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Cluster assignments.

        Returns
        -------
        ``soft=False``: integer labels (cells,); ``soft=True``: Student-t soft assignments
        (cells x n_clusters, rows sum to 1).
        """
        self._check_if_trained(warn=False)
        q = self._soft_assignments(adata, indices, batch_size)
        return q if soft else q.argmax(1)

    # ------------------------------------------------------------------------ new cells
    @classmethod
    def prepare_query_anndata(
        cls, adata: AnnData, reference_model: SCLLMDSC | str, prefix: str | None = None
    ) -> AnnData:
        """Map new cells onto a trained model's reference (the encoder's inputs).

        The query's counts are normalised and projected with the reference's highly
        variable genes, centre and PCA loadings (stored with the model); each cell's graph
        is its ``n_neighbors - 1`` nearest training cells in that PCA space (UMAP fuzzy
        weights), over which its propagated features are computed from the training cells'
        stored features. The reference is not changed and query cells are mapped
        independently of each other.

        Parameters
        ----------
        adata
            New cells with raw counts (in ``X`` or the ``layer`` the reference was set up
            with) and the reference's semantic embeddings in ``.obsm`` (e.g. computed with
            :func:`scllm_dsc.tl.embed_genes` on these cells). Genes are matched by name;
            reference genes absent from the query are set to the reference mean (more than
            half absent is an error).
        reference_model
            The trained model, or the directory it was saved to.
        prefix
            File prefix of a saved model.

        Returns
        -------
        A new AnnData (the query's cells and ``obs``; counts ordered as the model's genes,
        zeros for genes the query lacks; the semantic embeddings; the mapped features in
        private ``obsm`` keys) for :meth:`load` or :meth:`load_query_data`.
        """
        import anndata as ad

        if isinstance(reference_model, SCLLMDSC):
            ref = reference_model.reference_
            setup_args = reference_model.adata_manager.registry.get("setup_args", {})
            var_names = np.asarray(reference_model.adata.var_names, dtype=str)
        else:
            ref, setup_args, var_names = _saved_reference(str(reference_model), prefix)
        if ref is None:
            raise ValueError(
                "The reference model stores no PCA reference to map new cells with (set up "
                "by an older version, or with precomputed features); set it up again with "
                "`SCLLMDSC.setup_anndata` and retrain."
            )
        if setup_args.get("gene_graph"):
            raise ValueError(
                "Mapping new cells is not supported for models set up with `gene_graph=True`."
            )
        keys = setup_args.get("semantic_keys") or []
        keys = [keys] if isinstance(keys, str) else list(keys)
        for key in keys:
            if key not in adata.obsm:
                raise KeyError(
                    f"The reference model uses `obsm[{key!r}]`, which the new cells lack; "
                    "compute it on them the same way (e.g. `sd.tl.embed_genes(adata)`)."
                )
        layer = setup_args.get("layer")
        mapped = map_cells(adata, layer, ref, int(setup_args.get("random_state", 0)))

        X = to_csr(get_matrix(adata, layer), np.float32)
        pos = adata.var_names.get_indexer(var_names)
        have = pos >= 0
        sel = sparse.csr_matrix(X[:, np.where(have, pos, 0)])
        sel = sel @ sparse.diags(have.astype(np.float32))  # zero columns for absent genes
        sel = sparse.csr_matrix(sel, dtype=np.float32)
        sel.eliminate_zeros()
        query = ad.AnnData(
            X=sel,
            obs=adata.obs.copy(),
            var=pd.DataFrame(index=pd.Index(var_names)),
        )
        if layer is not None:
            query.layers[layer] = sel
        for key in keys:
            query.obsm[key] = np.asarray(adata.obsm[key])
        query.obsm[_FEATURES] = mapped["features"]
        query.obsm[_NN_IDX] = mapped["nn_indices"]
        query.obsm[_NN_W] = mapped["nn_weights"]
        if setup_args.get("augment"):  # the augmented views are only read by training
            query.obsm[_DROP] = mapped["features"]
            query.obsm[_PPR] = mapped["features"]
        query.uns[_QUERY] = True
        return query

    @classmethod
    def load(
        cls,
        dir_path: str,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        **kwargs,
    ):
        """Load a saved model; new cells given as ``adata`` are mapped onto its reference.

        As :meth:`scvi.model.base.BaseModelClass.load`. An ``adata`` that was not set up
        for this model (no propagated features) and does not hold the training cells (the
        same ``obs_names`` in the same order, which are set up again as in training) is
        taken to hold new cells: it is mapped with :meth:`prepare_query_anndata` and the
        loaded model works on the mapped copy (``model.adata``; rows in the order of
        ``adata``), so ``get_latent_representation()`` and ``predict()`` embed and assign
        the new cells.
        """
        if adata is not None and adata is not False and _FEATURES not in adata.obsm:
            ref = _saved_reference(str(dir_path), prefix)[0]
            if _needs_mapping(adata, ref):
                adata = cls.prepare_query_anndata(adata, dir_path, prefix=prefix)
        return super().load(
            dir_path, adata=adata, accelerator=accelerator, device=device, prefix=prefix,
            **kwargs,
        )

    @classmethod
    def load_query_data(cls, adata: AnnData, reference_model: SCLLMDSC | str) -> SCLLMDSC:
        """A model with the reference's weights bound to new cells (scvi-tools' query pattern).

        The new cells are mapped with :meth:`prepare_query_anndata` (unless already mapped);
        the returned model is not trained further: ``get_latent_representation()`` and
        ``predict()`` give the new cells' latent and clusters under the reference model.

        Parameters
        ----------
        adata
            New cells (see :meth:`prepare_query_anndata`).
        reference_model
            The trained model, or the directory it was saved to.
        """
        if not isinstance(reference_model, SCLLMDSC):
            return cls.load(str(reference_model), adata=adata)
        reference_model._check_if_trained(warn=False)
        query = (
            cls.prepare_query_anndata(adata, reference_model)
            if not adata.uns.get(_QUERY, False)
            else adata
        )
        registry = reference_model.adata_manager.registry
        cls.setup_anndata(query, source_registry=registry, **registry.get("setup_args", {}))
        params = reference_model.init_params_
        kwargs = {k: v for group in params.get("kwargs", {}).values() for k, v in group.items()}
        model = cls(query, **params["non_kwargs"], **kwargs)
        model.module.load_state_dict(reference_model.module.state_dict())
        model.reference_ = reference_model.reference_
        model.is_trained_ = True
        model.to_device(reference_model.device)
        model.module.eval()
        return model


def _reference_of(adata: AnnData, setup_args: dict) -> dict | None:
    """The reference for mapping new cells, or ``None`` if ``adata`` was set up without one
    (e.g. with features written by an older version)."""
    conn_key = Key.connectivities(setup_args.get("graph_key", Key.CLUSTER))
    if _REFERENCE not in adata.uns or conn_key not in adata.obsp or _FEATURES not in adata.obsm:
        return None
    genes = {k: (np.asarray(v) if isinstance(v, np.ndarray | list) else v)
             for k, v in adata.uns[_REFERENCE].items()}
    feats = np.asarray(adata.obsm[_FEATURES])
    if feats.shape[1] != genes["loadings"].shape[1] * (int(genes["n_hops"]) + 1):
        return None  # the stored features were not built from this reference
    return cell_reference(genes, feats, adata.obsp[conn_key], adata.obs_names)


def _saved_reference(
    dir_path: str, prefix: str | None = None
) -> tuple[dict | None, dict, np.ndarray]:
    """``(reference_, setup_args, var_names)`` of a model saved in ``dir_path``."""
    import os

    from scvi.model.base._constants import SAVE_KEYS

    path = os.path.join(dir_path, f"{prefix or ''}{SAVE_KEYS.MODEL_FNAME}")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    attrs = saved[SAVE_KEYS.ATTR_DICT_KEY]
    return (
        attrs.get("reference_"),
        attrs["registry_"].get("setup_args", {}),
        np.asarray(saved[SAVE_KEYS.VAR_NAMES_KEY], dtype=str),
    )


def _needs_mapping(adata, reference: dict | None) -> bool:
    """Whether ``adata`` holds new cells not yet prepared: neither set up nor mapped, and
    not the training cells (those are set up again as in training)."""
    if adata is None or adata is False or _FEATURES in adata.obsm:
        return False
    trained_on = (reference or {}).get("cells")
    return reference is not None and trained_on != cells_fingerprint(adata.obs_names)


def _gene_graph_inputs(adata: AnnData, use_text: bool) -> dict:
    """Module arguments of the gene graph stored by :meth:`SCLLMDSC.setup_anndata`."""
    if _GENE_GRAPH not in adata.uns:
        raise KeyError(
            f"`adata.uns[{_GENE_GRAPH!r}]` is missing; run `SCLLMDSC.setup_anndata(adata, "
            "gene_graph=True)` again."
        )
    gg = adata.uns[_GENE_GRAPH]
    pos = adata.var_names.get_indexer(np.asarray(gg["genes"], dtype=str))
    if (pos < 0).any():
        raise ValueError(
            "Genes of the stored gene graph are not in `adata.var_names`; run "
            "`SCLLMDSC.setup_anndata(adata, gene_graph=True)` again."
        )
    feats = np.asarray(gg["profiles"], dtype=np.float32)
    if use_text and Key.GENE_TEXT in adata.varm:
        feats = np.hstack([feats, np.asarray(adata.varm[Key.GENE_TEXT], dtype=np.float32)[pos]])
    return {
        "gene_index": torch.as_tensor(pos, dtype=torch.long),
        "gene_features": torch.as_tensor(feats),
        "gene_edge_index": torch.as_tensor(np.asarray(gg["edge_index"]), dtype=torch.long),
        "gene_edge_weight": torch.as_tensor(np.asarray(gg["edge_weight"]), dtype=torch.float32),
    }


def _sigint_handler():
    import signal

    try:
        return signal.getsignal(signal.SIGINT)
    except ValueError:  # pragma: no cover - not the main interpreter
        return None


def _restore_sigint(handler) -> None:
    """Put back the SIGINT handler Lightning may have replaced by SIG_IGN on an interrupt."""
    import signal
    import threading

    if handler is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not handler:
        signal.signal(signal.SIGINT, handler)


