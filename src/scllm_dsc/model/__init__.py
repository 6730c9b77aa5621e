"""The scvi-tools style model."""

from ._scllmdsc import SCLLMDSC, default_epochs, default_steps, prepare_structural_view
from ._trainingplan import SCLLMDSCTrainingPlan

__all__ = [
    "SCLLMDSC",
    "SCLLMDSCTrainingPlan",
    "default_epochs",
    "default_steps",
    "prepare_structural_view",
]
