"""Plots of the cross-modal alignment and of training."""

__all__: list[str] = []
