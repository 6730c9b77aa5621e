"""The scvi-tools module (torch model + losses) of scLLM-DSC."""

from ._module import TENSOR_KEYS, SCLLMDSCModule

__all__ = ["SCLLMDSCModule", "TENSOR_KEYS"]
