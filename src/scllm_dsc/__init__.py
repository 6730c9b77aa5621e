"""Cluster single-cell RNA-seq data with gene knowledge from language models (scLLM-DSC).

``import scllm_dsc as sd`` gives ``sd.tl`` (tools), ``sd.pl`` (plots), ``sd.model``
(the scvi-tools style model) and ``sd.settings``. Submodules are imported on first use so
that ``import scllm_dsc`` stays fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from ._settings import settings

try:
    __version__ = version("scllm-dsc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

_SUBMODULES = ("tl", "pl", "model", "module", "nn", "knowledge", "encoders", "graph", "datasets")

__all__ = ["settings", "__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        mod = importlib.import_module(f".{name}", __name__)
        globals()[name] = mod
        return mod
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
