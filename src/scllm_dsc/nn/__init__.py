"""Neural network building blocks and losses of the scLLM-DSC model."""

from ._layers import MLP, GeneGCN, NBDecoder, ProjectionHead
from ._losses import (
    cross_view_correlation,
    dec_target,
    infonce,
    kl_target,
    nb_nll,
    ncut_loss,
    neighbour_infonce,
    orthogonality,
    sinkhorn_target,
    student_t_q,
    variance_reg,
)

__all__ = [
    "MLP",
    "GeneGCN",
    "NBDecoder",
    "ProjectionHead",
    "cross_view_correlation",
    "dec_target",
    "infonce",
    "kl_target",
    "neighbour_infonce",
    "nb_nll",
    "ncut_loss",
    "orthogonality",
    "sinkhorn_target",
    "student_t_q",
    "variance_reg",
]
