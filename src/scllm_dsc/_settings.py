"""Package-wide settings: data and cache folders, device, verbosity."""

from __future__ import annotations

import os
from pathlib import Path


def bundled_knowledge_dir() -> Path:
    """The gene knowledge shipped inside the package (NCBI RefSeq / Gene Ontology texts)."""
    return Path(__file__).resolve().parent / "knowledge" / "data"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "scllm_dsc"


class ScllmDscSettings:
    """Settings of :mod:`scllm_dsc`, available as ``sd.settings``.

    Attributes
    ----------
    knowledge_dir
        Folder searched for ``{species}_gene_text.tsv.gz`` when no knowledge source is given.
        Defaults to the environment variable ``SCLLM_DSC_DATA``, else the human and mouse
        tables shipped with the package (see the "Gene knowledge" docs page).
    cache_dir
        Folder of the on-disk caches (text embeddings, NCBI records). Defaults to the
        environment variable ``SCLLM_DSC_CACHE``, else ``~/.cache/scllm_dsc``.
    device
        Device for the text encoders: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``,
        ``"cuda"``, ``"cuda:1"``...
    verbosity
        Shortcut to :attr:`scanpy.settings.verbosity`, which this package logs through.
    """

    def __init__(self) -> None:
        self._knowledge_dir: Path | None = None
        self._cache_dir: Path | None = None
        self.device: str = "auto"

    @property
    def cache_dir(self) -> Path:
        if self._cache_dir is not None:
            return self._cache_dir
        env = os.environ.get("SCLLM_DSC_CACHE")
        return Path(env) if env else _default_cache_dir()

    @cache_dir.setter
    def cache_dir(self, value: str | os.PathLike | None) -> None:
        self._cache_dir = None if value is None else Path(value)

    @property
    def knowledge_dir(self) -> Path:
        if self._knowledge_dir is not None:
            return self._knowledge_dir
        env = os.environ.get("SCLLM_DSC_DATA")
        return Path(env) if env else bundled_knowledge_dir()

    @knowledge_dir.setter
    def knowledge_dir(self, value: str | os.PathLike | None) -> None:
        self._knowledge_dir = None if value is None else Path(value)

    @property
    def verbosity(self):
        import scanpy as sc

        return sc.settings.verbosity

    @verbosity.setter
    def verbosity(self, value) -> None:
        import scanpy as sc

        sc.settings.verbosity = value

    def resolve_device(self, device: str | None = None) -> str:
        """Return a concrete torch device string for ``device`` (default :attr:`device`)."""
        device = device or self.device
        if device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return device

    def __repr__(self) -> str:
        return (
            f"ScllmDscSettings(knowledge_dir={str(self.knowledge_dir)!r}, "
            f"cache_dir={str(self.cache_dir)!r}, device={self.device!r})"
        )


settings = ScllmDscSettings()
