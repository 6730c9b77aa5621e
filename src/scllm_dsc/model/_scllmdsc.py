"""The scvi-tools style scLLM-DSC model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, NumericalObsField, ObsmField
from scvi.dataloaders import DataSplitter
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from .._constants import Key
from ..module import TENSOR_KEYS, SCLLMDSCModule
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
_INIT_MAX_CELLS = 50_000


def default_epochs(n_obs: int, batch_size: int = 256, n_steps: int = 600) -> int:
    """Total epochs (pre-training + joint) for ``n_obs`` cells: about ``n_steps`` optimiser
    steps, clipped to [20, 200] epochs.

    Small data gets more passes, large data fewer (each epoch already holds many mini-batches),
    so run time grows slowly with the number of cells.
    """
    steps_per_epoch = max(1, n_obs // max(batch_size, 1))
    return int(np.clip(round(n_steps / steps_per_epoch), 20, 200))


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
        "nn_indices": idx.astype(np.float32),
        "nn_weights": w,
        "highly_variable": g.highly_variable,
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


class SCLLMDSC(BaseModelClass):
    """LLM-knowledge enhanced cross-modal deep structural clustering (scLLM-DSC).

    Structural view: an encoder over SGC/SIGN-propagated PCA features of a sparse kNN graph,
    an NB reconstruction of the counts and a normalised-cut loss over the graph's edges.
    Semantic view: the language-model cell embeddings (Path 1, ``X_gene_text``; Path 2,
    ``X_cell_sentence``). Both are aligned by projection heads with symmetric InfoNCE; a
    Student-t clustering head on the fused latent is trained towards an optimal-transport
    (Sinkhorn) or DEC target after a pre-training phase. Training is mini-batch, so memory
    grows linearly with the number of cells.

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
        How the cluster centres are initialised from the pre-trained fused latent:
        ``"kmeans"`` (default) or ``"leiden"`` (resolution bisected to ``n_clusters``; with
        ``n_clusters=None``: Leiden at ``resolution``); or ``"merge"``: a
        Leiden over-clustering merged to ``n_clusters`` on the latent's kNN graph by
        :func:`~scllm_dsc.graph.overcluster_merge` (most connected pair first, pairs that
        marker genes of the registered counts tell apart last), and with
        ``n_clusters=None`` merged until every connected pair has markers, which sets the
        number of clusters (also what the default does with ``n_clusters=None``). Computed
        on at most 50,000 sampled cells. Measurements: the
        benchmarks page.
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
        init: Literal["kmeans", "leiden", "merge"] = "kmeans",
        gene_text_init: bool = True,
        **module_kwargs,
    ):
        super().__init__(adata)
        if n_clusters is not None and int(n_clusters) < 2:
            raise ValueError(f"`n_clusters` must be >= 2 or None, got {n_clusters}.")
        if init not in ("kmeans", "leiden", "merge"):
            raise ValueError(f"`init` must be 'kmeans', 'leiden' or 'merge', got {init!r}.")
        n_cells = self.summary_stats.n_cells
        if n_clusters is not None and int(n_clusters) >= n_cells:
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
        ``adata.uns[graph_key]``. Graph-propagated features and a fixed-width neighbour table
        are stored in private ``adata.obsm`` keys (``_scllm_dsc_*``) and registered.

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

        conn_key = Key.connectivities(graph_key)
        needed = [_FEATURES, _NN_IDX, _NN_W] + ([_DROP, _PPR] if augment else [])
        have = (
            conn_key in adata.obsp
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
                adata.uns[graph_key] = {
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
        **trainer_kwargs,
    ):
        """Pre-train (reconstruction, cut, alignment), initialise centres, then train jointly.

        Parameters
        ----------
        max_epochs
            Total epochs of both phases. ``None``: :func:`default_epochs` of the cell count.
        pretrain_epochs
            Epochs of the pre-training phase (default: half of ``max_epochs``).
        accelerator, devices
            Lightning accelerator and devices; ``"auto"`` picks CUDA when present, else CPU.
        batch_size
            Cells per mini-batch; ``None`` trains full-batch (small data only).
        update_interval
            The clustering target is recomputed over all cells every ``update_interval``
            epochs of the joint phase (an inference pass over the cells); measurements of 1
            (the default) against 5 are on the benchmarks page.
        random_state
            Seed of torch, numpy and the centre initialisation during training. The initial
            weights are drawn when the model is created: for identical results set
            ``scvi.settings.seed`` (or call ``torch.manual_seed``) before creating it
            (:func:`scllm_dsc.tl.cluster` does this for you).
        plan_kwargs
            Passed to :class:`~scllm_dsc.model.SCLLMDSCTrainingPlan` (``lr``...).
        datasplitter_kwargs
            Passed to :class:`scvi.dataloaders.DataSplitter`.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer`.

        Notes
        -----
        Stopping never looks at labels: the model of the final epoch is kept.
        """
        import scvi

        n = self.adata.n_obs
        if random_state is not None:
            scvi.settings.seed = int(random_state)
        self._random_state = 0 if random_state is None else int(random_state)
        max_epochs = (
            default_epochs(n, batch_size or n) if max_epochs is None else int(max_epochs)
        )
        pretrain_epochs = max_epochs // 2 if pretrain_epochs is None else int(pretrain_epochs)
        if not 0 <= pretrain_epochs <= max_epochs or max_epochs < 1:
            raise ValueError(
                f"Need 1 <= max_epochs and 0 <= pretrain_epochs <= max_epochs, got "
                f"max_epochs={max_epochs}, pretrain_epochs={pretrain_epochs}."
            )
        batch_size = n if batch_size is None else int(min(batch_size, n))
        plan_kwargs = dict(plan_kwargs or {})
        datasplitter_kwargs = dict(datasplitter_kwargs or {})
        trainer_kwargs.setdefault("enable_progress_bar", scvi.settings.verbosity <= logging.INFO)
        common = dict(
            batch_size=batch_size,
            accelerator=accelerator,
            devices=devices,
            plan_kwargs=plan_kwargs,
            datasplitter_kwargs=datasplitter_kwargs,
            **trainer_kwargs,
        )
        feats = torch.as_tensor(
            np.asarray(self.adata_manager.get_from_registry(TENSOR_KEYS.FEATURES)),
            dtype=torch.float32,
        )
        self.module.set_graph_features(feats)
        sigint = _sigint_handler()
        try:
            self.module.clustering = False
            self.module.set_target(None)
            if pretrain_epochs > 0:
                self._run_phase(pretrain_epochs, **common)
            self._init_clusters()
            joint = max_epochs - pretrain_epochs
            if joint > 0:
                self.module.train()
                self.module.clustering = True
                self._run_phase(
                    joint,
                    refresh_target=self._refresh_target,
                    update_interval=update_interval,
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
            self.module.graph_features = torch.zeros(0, feats.shape[1])
            self.module.eval()
            _restore_sigint(sigint)
        self.is_trained_ = True
        self.module.eval()

    def _init_clusters(self) -> None:
        """Centres of the clusters of the pre-trained fused latent (see ``init``)."""
        from ..graph import leiden_labels, leiden_n_clusters

        z = self.get_latent_representation()
        rs = getattr(self, "_random_state", 0)
        rng = np.random.default_rng(rs)
        # the initial partition is computed on at most `_INIT_MAX_CELLS` cells: enough to
        # place the centres, and it keeps Leiden's cost bounded on millions of cells
        sub = np.sort(rng.choice(len(z), _INIT_MAX_CELLS, replace=False)) if len(
            z
        ) > _INIT_MAX_CELLS else slice(None)
        zs = z[sub]
        if self.init == "merge" or (self.n_clusters is None and self.init == "kmeans"):
            from ..graph._merge import overcluster_merge

            counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
            counts = counts[sub] if isinstance(sub, np.ndarray) else counts
            labels = overcluster_merge(zs, counts, self.n_clusters, random_state=rs)
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

    @torch.no_grad()
    def _refresh_target(self) -> None:
        """Recompute the target P over all cells (in chunks) from the current Q."""
        from ..nn import dec_target, sinkhorn_target

        q = torch.as_tensor(self._soft_assignments(self.adata, batch_size=4096))
        q = q.double()
        p = sinkhorn_target(q) if self.target_kind == "sinkhorn" else dec_target(q)
        self.module.set_target(p.float())

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


