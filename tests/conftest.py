"""Shared fixtures: paths to the project's shared real data, small synthetic AnnData objects.

Unit tests run on :func:`synthetic` (always there). A test that reads ``../shared`` must carry
``@pytest.mark.shared``: it then skips cleanly when the data are absent, while an unmarked
test that asks for them fails (so nothing skips silently for missing data).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("SCLLM_DSC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATASETS = SHARED / "data" / "datasets"
GENETEXT = SHARED / "data" / "genetext"


_CURRENT: list = [None]  # the test item being set up or run


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _CURRENT[0] = item


def _require(path: Path) -> Path:
    item = _CURRENT[0]
    if item is not None and item.get_closest_marker("shared") is None:
        pytest.fail(f"{item.nodeid} reads the shared data but is not marked "
                    "@pytest.mark.shared", pytrace=False)
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set SCLLM_DSC_SHARED)")
    return path


def synthetic(n_obs: int = 400, n_vars: int = 300, n_clusters: int = 4, **kwargs):
    """Negative-binomial counts with planted types and real gene symbols (no files needed)."""
    from scllm_dsc.datasets import synthetic_counts

    return synthetic_counts(n_obs, n_vars, n_clusters, **kwargs)


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
    """Point the package caches at one folder per test session unless the caller chose one.

    The folder is exported as ``SCLLM_DSC_CACHE`` too, so the demo and the tutorial kernels
    share the text embeddings computed during this run, and nothing carries over between runs.
    """
    from scllm_dsc import settings

    if "SCLLM_DSC_CACHE" not in os.environ:
        folder = tmp_path_factory.mktemp("scllm_dsc_cache")
        settings.cache_dir = folder
        os.environ["SCLLM_DSC_CACHE"] = str(folder)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    yield


@pytest.fixture(autouse=True)
def _seeded():
    """Seed torch's and numpy's global generators before every test.

    A model draws its initial weights when it is created, before ``train(random_state=...)``
    seeds anything (as in scvi-tools); without this a test's result would depend on which
    tests ran before it in the same process.
    """
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 (the legacy global generator is what is seeded)
