"""Shared fixtures: paths to the project's shared real data, small AnnData objects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("SCLLM_DSC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATASETS = SHARED / "data" / "datasets"
GENETEXT = SHARED / "data" / "genetext"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set SCLLM_DSC_SHARED)")
    return path


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    return _require(DATASETS)


@pytest.fixture(scope="session")
def genetext_dir() -> Path:
    return _require(GENETEXT)


@pytest.fixture(scope="session")
def human_table(genetext_dir) -> Path:
    return genetext_dir / "human_gene_text.tsv.gz"


@pytest.fixture(scope="session")
def mouse_table(genetext_dir) -> Path:
    return genetext_dir / "mouse_gene_text.tsv.gz"


def read_dataset(name: str):
    import anndata as ad

    return ad.read_h5ad(_require(DATASETS / f"{name}.h5ad"))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Point the package caches at a session folder unless the caller chose one."""
    from scllm_dsc import settings

    if "SCLLM_DSC_CACHE" not in os.environ:
        settings.cache_dir = tmp_path_factory.mktemp("scllm_dsc_cache")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    yield
