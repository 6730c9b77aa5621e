"""Encoder, projection head and count decoder."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _hidden(n_in: int, n_hidden: int, n_layers: int = 1) -> nn.Module:
    """Linear -> LayerNorm -> ReLU blocks: :class:`scvi.nn.FCLayers` without dropout."""
    from scvi.nn import FCLayers

    return FCLayers(
        n_in, n_hidden, n_layers=n_layers, n_hidden=n_hidden, dropout_rate=0.0,
        use_batch_norm=False, use_layer_norm=True,
    )


class MLP(nn.Module):
    """Linear -> LayerNorm -> ReLU blocks (:class:`scvi.nn.FCLayers`), then a linear output."""

    def __init__(self, n_in: int, n_out: int, n_hidden: int = 256, n_layers: int = 1):
        super().__init__()
        self.net = nn.Sequential(_hidden(n_in, n_hidden, n_layers), nn.Linear(n_hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ProjectionHead(nn.Module):
    """Linear -> ReLU -> Linear, output L2-normalised (the cross-modal projection heads)."""

    def __init__(self, n_in: int, n_out: int = 32, n_hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class NBDecoder(nn.Module):
    """Negative binomial decoder: latent -> gene proportions (softmax) x library size.

    The inverse dispersion ``theta`` is one free parameter per gene (as in scVI's
    ``dispersion="gene"``).
    """

    def __init__(self, n_latent: int, n_genes: int, n_hidden: int = 256):
        super().__init__()
        self.body = _hidden(n_latent, n_hidden)
        self.scale = nn.Linear(n_hidden, n_genes)
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def forward(self, z: torch.Tensor, library: torch.Tensor):
        h = self.body(z)
        px_scale = torch.softmax(self.scale(h), dim=-1)
        mu = px_scale * library
        return mu, self.log_theta.exp()


class GeneGCN(nn.Module):
    """Two graph-convolution layers over the gene-gene graph (torch-geometric ``GCNConv``).

    The edge weights are expected already normalised (``gcn_norm``), so the layers do not
    renormalise them.
    """

    def __init__(self, n_in: int, n_out: int, n_hidden: int = 128):
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.conv1 = GCNConv(n_in, n_hidden, normalize=False)
        self.conv2 = GCNConv(n_hidden, n_out, normalize=False)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor):
        h = F.relu(self.conv1(x, edge_index, edge_weight))
        return self.conv2(h, edge_index, edge_weight)
