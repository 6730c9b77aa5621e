"""Neural network building blocks and losses of the scLLM-DSC model."""

from ._layers import MLP, NBDecoder, ProjectionHead
from ._losses import (
    dec_target,
    infonce,
    kl_target,
    nb_nll,
    ncut_loss,
    orthogonality,
    sinkhorn_target,
    student_t_q,
    variance_reg,
)

__all__ = [
    "MLP",
    "NBDecoder",
    "ProjectionHead",
    "dec_target",
    "infonce",
    "kl_target",
    "nb_nll",
    "ncut_loss",
    "orthogonality",
    "sinkhorn_target",
    "student_t_q",
    "variance_reg",
]
