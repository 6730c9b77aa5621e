"""The scvi-tools style model."""

from ._scllmdsc import SCLLMDSC

__all__ = ["SCLLMDSC"]
