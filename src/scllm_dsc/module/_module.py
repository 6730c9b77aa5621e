"""scvi-tools ``BaseModuleClass`` implementing the cross-modal deep structural clustering model."""

from __future__ import annotations

import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.nn import functional as F

from ..nn import (
    MLP,
    GeneGCN,
    NBDecoder,
    ProjectionHead,
    cross_view_correlation,
    infonce,
    kl_target,
    nb_nll,
    ncut_loss,
    neighbour_infonce,
    orthogonality,
    student_t_q,
    variance_reg,
)


class TENSOR_KEYS:
    """Names of the registered tensors in a mini-batch."""

    X = REGISTRY_KEYS.X_KEY
    FEATURES = "graph_features"
    FEATURES_DROP = "graph_features_drop"
    FEATURES_PPR = "graph_features_ppr"
    TEXT_1 = "text_path1"
    TEXT_2 = "text_path2"
    TEXT = (TEXT_1, TEXT_2)  # Path 1, Path 2: one or both registered
    NN_IDX = "nn_indices"
    NN_W = "nn_weights"
    INDICES = REGISTRY_KEYS.INDICES_KEY


class SCLLMDSCModule(BaseModuleClass):
    """Torch module of :class:`~scllm_dsc.model.SCLLMDSC`.

    Structural view: an MLP over graph-propagated (SIGN) features gives ``z_feat``; an NB
    decoder reconstructs the counts; a normalised-cut loss over each cell's graph edges and a
    soft orthogonality penalty shape ``z_feat``. Semantic view: ``Z_text = w z1 + (1 - w) z2``
    (both L2-normalised). Two projection heads map both views to a shared space, aligned by
    symmetric InfoNCE plus a VICReg variance term. The fused latent is the weighted
    concatenation ``[sqrt(1 - a) z_feat/|z_feat|, sqrt(a) h_text]``; a Student-t clustering
    head on it is trained towards a target ``P`` (Sinkhorn OT or DEC) set from outside (see
    ``set_target``). Options: Siamese augmentation (``augment``) and gene-graph refinement
    (``gene_index`` ...).

    Parameters
    ----------
    n_genes
        Number of genes reconstructed (registered counts).
    n_features
        Width of the propagated feature vectors.
    n_text
        Width of the semantic embeddings; 0 runs the structural view alone.
    n_clusters
        Number of cluster centres (0: no clustering head yet).
    n_latent
        Width of ``z_feat`` and of the shared projection space.
    n_hidden
        Hidden width of encoder and decoder.
    path_weight
        Weight ``w`` of Path 1 in ``Z_text``.
    semantic_weight
        Weight ``a`` of the semantic head in the fused latent.
    tau
        InfoNCE temperature.
    var_weight
        Weight of the variance regulariser inside the alignment term.
    w_recon, w_cut, w_kl, w_align
        Loss weights (paper: 0.3, 0.15, 0.32, 0.3). ``w_cut`` defaults to 0: the cut loss
        lowered the clustering quality of the pre-trained latent (the benchmarks page); the
        encoder is graph-guided through the propagated input features either way. With
        ``w_cut > 0`` each cell's graph neighbours are encoded and the normalised cut over
        those edges is added.
    ortho_weight
        Weight of the orthogonality penalty inside the cut term.
    alpha
        Degrees of freedom of the Student-t kernel.
    q_scale
        Distances are multiplied by this before the Student-t kernel (default
        ``sqrt(n_latent) / 2``), since the latent is L2-bounded.
    align_structural
        Let the alignment loss reach the structural encoder (default ``False``: the heads are
        trained by InfoNCE, the structural latent by reconstruction, cut and clustering).
    augment
        Siamese augmentation (scSiameseClu ideas): both augmented graph views (registered
        as ``graph_features_drop`` / ``graph_features_ppr``), with multiplicative Gaussian
        feature noise ``N(1, feature_noise)``, go through the shared encoder, and the
        cross-view correlation matrix of their latent dimensions is pushed towards the
        identity (weight ``w_siamese``). Not a cell-by-cell similarity target (the identity
        over the batch's cells): it pushes cells of one cluster apart (the benchmarks page).
    feature_noise, w_siamese
        Noise level and loss weight of the augmentation.
    gene_index, gene_features, gene_edge_index, gene_edge_weight
        Gene-graph refinement (scRCL ideas), all given or none: positions of the graph's
        genes among the reconstructed genes, their input features, and the normalised
        gene-gene edge list. A two-layer GCN over the gene graph gives gene embeddings; each
        cell's structural latent is refined by adding the expression-weighted mean of its
        genes' embeddings, and a neighbourhood-contrastive term (weight ``w_neighbour``,
        temperature ``tau_neighbour``) pulls graph neighbours together relative to the
        other cells of the batch.
    w_neighbour, tau_neighbour
        Weight and temperature of the neighbourhood-contrastive term.
    """

    def __init__(
        self,
        n_genes: int,
        n_features: int,
        n_text: int = 0,
        n_clusters: int = 0,
        n_latent: int = 16,
        n_hidden: int = 256,
        path_weight: float = 0.5,
        semantic_weight: float = 0.5,
        tau: float = 0.1,
        var_weight: float = 0.01,
        w_recon: float = 0.3,
        w_cut: float = 0.0,
        w_kl: float = 0.32,
        w_align: float = 0.3,
        ortho_weight: float = 1.0,
        alpha: float = 1.0,
        q_scale: float | None = None,
        align_structural: bool = False,
        augment: bool = False,
        feature_noise: float = 0.1,
        w_siamese: float = 0.1,
        gene_index: torch.Tensor | None = None,
        gene_features: torch.Tensor | None = None,
        gene_edge_index: torch.Tensor | None = None,
        gene_edge_weight: torch.Tensor | None = None,
        w_neighbour: float = 0.1,
        tau_neighbour: float = 0.5,
    ):
        super().__init__()
        self.n_genes, self.n_features, self.n_text = n_genes, n_features, n_text
        self.n_latent, self.path_weight = n_latent, path_weight
        self.semantic_weight = semantic_weight
        self.tau, self.var_weight, self.alpha = tau, var_weight, alpha
        self.w_recon, self.w_cut, self.w_kl, self.w_align = w_recon, w_cut, w_kl, w_align
        self.ortho_weight = ortho_weight
        # the latent lives on (or inside) the unit sphere; distances are scaled for the
        # Student-t kernel so that assignments are not uniformly flat
        self.q_scale = float(q_scale) if q_scale is not None else n_latent**0.5 / 2
        self.use_semantic = n_text > 0
        self.align_structural = align_structural

        self.augment, self.feature_noise, self.w_siamese = augment, feature_noise, w_siamese
        self.w_neighbour, self.tau_neighbour = w_neighbour, tau_neighbour
        gene_parts = (gene_index, gene_features, gene_edge_index, gene_edge_weight)
        if any(p is not None for p in gene_parts) and not all(p is not None for p in gene_parts):
            raise ValueError(
                "The gene graph needs gene_index, gene_features and both edge tensors."
            )
        self.use_gene_graph = gene_index is not None
        if self.use_gene_graph:
            # fixed inputs of the gene GCN, rebuilt from the AnnData when a model is loaded
            self.register_buffer("gene_index", torch.as_tensor(gene_index), persistent=False)
            self.register_buffer("gene_features", torch.as_tensor(gene_features), persistent=False)
            self.register_buffer("gene_edge_index", torch.as_tensor(gene_edge_index),
                                 persistent=False)
            self.register_buffer("gene_edge_weight", torch.as_tensor(gene_edge_weight),
                                 persistent=False)
            self.gene_gcn = GeneGCN(self.gene_features.shape[1], n_latent, n_hidden=n_hidden)
        self.encoder = MLP(n_features, n_latent, n_hidden=n_hidden)
        self.decoder = NBDecoder(n_latent, n_genes, n_hidden=n_hidden)
        if self.use_semantic:
            self.head_feat = ProjectionHead(n_latent, n_latent)
            self.head_text = ProjectionHead(n_text, n_latent)
        n_fused = 2 * n_latent if n_text > 0 else n_latent
        self.centers = nn.Parameter(torch.zeros(n_clusters, n_fused), requires_grad=n_clusters > 0)
        # set from outside: all cells' propagated features (for neighbours in the cut loss)
        # and the clustering target P; neither is saved with the model.
        self.register_buffer("graph_features", torch.zeros(0, n_features), persistent=False)
        self.target: torch.Tensor | None = None
        self.batch_target = None
        self.clustering = False

    # ----------------------------------------------------------------- set from the model
    @property
    def n_clusters(self) -> int:
        return int(self.centers.shape[0])

    def init_centers(self, centers: torch.Tensor) -> None:
        """Replace the cluster centres (k x n_latent) and enable the clustering head."""
        self.centers = nn.Parameter(
            torch.as_tensor(centers, dtype=torch.float32, device=self.centers.device).clone()
        )

    def set_graph_features(self, features: torch.Tensor) -> None:
        """Keep all cells' propagated features so neighbours can be encoded in the cut loss."""
        self.graph_features = torch.as_tensor(features, dtype=torch.float32).to(
            self.centers.device
        )

    def set_target(self, target: torch.Tensor | None) -> None:
        """Set the clustering target ``P`` (cells x k) indexed by registered cell index.

        It stays on the device it is given on (the model computes it on the module's).
        """
        self.target = None if target is None else target.detach()

    def set_batch_target(self, fn) -> None:
        """Compute the target of each mini-batch from its own (detached) ``q`` with ``fn``
        (e.g. :func:`~scllm_dsc.nn.sinkhorn_target`) when no cell-indexed target is set;
        ``None`` turns this off."""
        self.batch_target = fn

    # ----------------------------------------------------------------------- scvi hooks
    def inference_fields(self, registered) -> list[str]:
        """Registry keys :meth:`inference` reads, among those ``registered``: a data loader
        for inference needs no others (the counts only for the gene graph)."""
        keys = [TENSOR_KEYS.FEATURES, *(k for k in TENSOR_KEYS.TEXT if k in registered)]
        return [*keys, TENSOR_KEYS.X] if self.use_gene_graph else keys

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict:
        return {
            "features": tensors[TENSOR_KEYS.FEATURES],
            "text1": tensors.get(TENSOR_KEYS.TEXT_1),
            "text2": tensors.get(TENSOR_KEYS.TEXT_2),
            "x": tensors[TENSOR_KEYS.X] if self.use_gene_graph else None,
        }

    def fuse_text(self, text1, text2):
        """``Z_text = w * z1 + (1 - w) * z2``, both L2-normalised first."""
        parts = [t for t in (text1, text2) if t is not None]
        if len(parts) == 2:
            return self.path_weight * F.normalize(text1, dim=-1) + (
                1.0 - self.path_weight
            ) * F.normalize(text2, dim=-1)
        return F.normalize(parts[0], dim=-1)

    @property
    def needs_neighbours(self) -> bool:
        """Whether the loss encodes each cell's graph neighbours (cut or neighbour term)."""
        return self.w_cut > 0 or (self.use_gene_graph and self.w_neighbour > 0)

    @property
    def n_fused(self) -> int:
        """Width of the fused latent."""
        return 2 * self.n_latent if self.use_semantic else self.n_latent

    def gene_embeddings(self) -> torch.Tensor:
        """Gene embeddings (graph genes x n_latent) from the GCN over the gene graph."""
        return self.gene_gcn(self.gene_features, self.gene_edge_index, self.gene_edge_weight)

    def refine_with_genes(self, z_feat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Add each cell's expression-weighted mean of its genes' embeddings to ``z_feat``."""
        xg = x[:, self.gene_index]
        w = torch.log1p(1e4 * xg / x.sum(1, keepdim=True).clamp_min(1.0))
        w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
        return z_feat + w @ self.gene_embeddings()

    @auto_move_data
    def inference(self, features, text1=None, text2=None, x=None) -> dict[str, torch.Tensor]:
        z_enc = self.encoder(features)
        z_feat = self.refine_with_genes(z_enc, x) if self.use_gene_graph else z_enc
        zn = F.normalize(z_feat, dim=-1)
        out = {"z_feat": z_feat, "z_feat_norm": zn, "z_enc": z_enc}
        if self.use_semantic:
            # the alignment shapes the structural encoder only if asked (align_structural);
            # by default it trains the projection heads and the structure stays expression-led
            z_in = z_feat if self.align_structural else z_feat.detach()
            h_feat = self.head_feat(z_in)
            h_text = self.head_text(self.fuse_text(text1, text2))
            a = self.semantic_weight
            # weighted concatenation: squared distances add up as (1-a) d_struct^2 + a d_text^2
            z = torch.cat([(1.0 - a) ** 0.5 * zn, a**0.5 * h_text], dim=-1)
            out.update(h_feat=h_feat, h_text=h_text)
        else:
            z = zn
        out["z"] = z
        if self.n_clusters > 0:
            out["q"] = student_t_q(z * self.q_scale, self.centers * self.q_scale, self.alpha)
        return out

    def _get_generative_input(self, tensors, inference_outputs) -> dict:
        x = tensors[TENSOR_KEYS.X]
        return {"z_feat": inference_outputs["z_feat"], "library": x.sum(1, keepdim=True)}

    @auto_move_data
    def generative(self, z_feat, library) -> dict[str, torch.Tensor]:
        mu, theta = self.decoder(z_feat, library.clamp_min(1.0))
        return {"mu": mu, "theta": theta}

    def loss(self, tensors, inference_outputs, generative_outputs, **kwargs) -> LossOutput:
        x = tensors[TENSOR_KEYS.X]
        dev = x.device
        mu, theta = generative_outputs["mu"], generative_outputs["theta"]
        nll = nb_nll(x, mu, theta)  # cells x genes, without the constant lgamma(x + 1)
        recon = nll.mean()  # per gene and cell, so magnitudes are comparable

        zn = inference_outputs["z_feat_norm"]
        zero = torch.zeros((), device=dev)
        cut = neighbour = zero
        if self.graph_features.shape[0] > 0 and self.needs_neighbours:
            nn_idx = tensors[TENSOR_KEYS.NN_IDX].long()
            nn_w = tensors[TENSOR_KEYS.NN_W].float()
            b, k = nn_idx.shape
            feats = self.graph_features[nn_idx.reshape(-1).to(self.graph_features.device)]
            z_nb = F.normalize(self.encoder(feats.to(dev)), dim=-1).reshape(b, k, -1)
            if self.w_cut > 0:
                cut = ncut_loss(zn, z_nb, nn_w)
            if self.use_gene_graph and self.w_neighbour > 0:
                z_enc = F.normalize(inference_outputs["z_enc"], dim=-1)
                neighbour = neighbour_infonce(z_enc, z_nb, nn_w > 0, self.tau_neighbour)
        siamese = zero
        if self.augment and self.w_siamese > 0 and TENSOR_KEYS.FEATURES_DROP in tensors:
            views = []
            for key in (TENSOR_KEYS.FEATURES_DROP, TENSOR_KEYS.FEATURES_PPR):
                f = tensors[key]
                noise = 1.0 + self.feature_noise * torch.randn_like(f) if self.training else 1.0
                views.append(self.encoder(f * noise))
            siamese = cross_view_correlation(views[0], views[1])
        ortho = orthogonality(zn)
        cut_term = cut + self.ortho_weight * ortho

        if self.use_semantic:
            nce = infonce(inference_outputs["h_text"], inference_outputs["h_feat"], self.tau)
            var = 0.5 * (
                variance_reg(inference_outputs["h_text"] * self.n_latent**0.5)
                + variance_reg(inference_outputs["h_feat"] * self.n_latent**0.5)
            )
            align = nce + self.var_weight * var
        else:
            nce = var = align = zero

        if self.clustering and self.target is not None and "q" in inference_outputs:
            idx = tensors[TENSOR_KEYS.INDICES].long().reshape(-1).to(self.target.device)
            p = self.target[idx].to(dev)
            kl = kl_target(p, inference_outputs["q"])
        elif self.clustering and self.batch_target is not None and "q" in inference_outputs:
            q = inference_outputs["q"]
            with torch.no_grad():
                p = self.batch_target(q.detach().double()).to(q.dtype)
            kl = kl_target(p, q)
        else:
            kl = zero

        loss = (
            self.w_recon * recon
            + self.w_cut * cut_term
            + self.w_align * align
            + self.w_kl * kl
            + self.w_siamese * siamese
            + self.w_neighbour * neighbour
        )
        extra = {
            "recon": recon.detach(),
            "ncut": cut.detach(),
            "ortho": ortho.detach(),
            "infonce": nce.detach(),
            "var_reg": var.detach(),
            "kl": kl.detach(),
            "phase": torch.tensor(float(self.clustering)),
        }
        if self.augment:
            extra["siamese"] = siamese.detach()
        if self.use_gene_graph:
            extra["neighbour"] = neighbour.detach()
        return LossOutput(
            loss=loss,
            reconstruction_loss=nll.sum(1),
            n_obs_minibatch=x.shape[0],
            extra_metrics=extra,
        )

    @torch.inference_mode()
    def sample(self, tensors, n_samples: int = 1) -> torch.Tensor:
        """Sample counts from the NB decoder given the cells in ``tensors``."""
        from scvi.distributions import NegativeBinomial

        inf = self.inference(**self._get_inference_input(tensors))
        gen = self.generative(**self._get_generative_input(tensors, inf))
        dist = NegativeBinomial(mu=gen["mu"], theta=gen["theta"])
        s = dist.sample((n_samples,))
        return s[0] if n_samples == 1 else s.permute(1, 2, 0)
