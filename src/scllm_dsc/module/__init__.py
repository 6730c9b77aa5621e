"""The scvi-tools module (torch model + losses) of scLLM-DSC."""

from ._module import SCLLMDSCModule, TENSOR_KEYS

__all__ = ["SCLLMDSCModule", "TENSOR_KEYS"]
