"""The tutorials execute top to bottom on CPU (they are part of the docs and must not rot)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(p.name for p in TUTORIALS.glob("*.ipynb"))


def test_both_tutorials_are_committed_with_outputs():
    import nbformat

    assert {"pbmc_gene_knowledge.ipynb", "existing_scanpy_notebook.ipynb"} <= set(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = nbformat.read(TUTORIALS / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.get("outputs") is not None for c in code)
        assert any(c.outputs for c in code), f"{name} is stored without outputs"


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_executes(name, monkeypatch, tmp_path):
    pytest.importorskip("nbclient", reason="pip install 'scllm-dsc[doc]'")
    import nbformat

    spec = importlib.util.spec_from_file_location("_make", TUTORIALS / "_make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    monkeypatch.delenv("SCLLM_DSC_DATA", raising=False)  # the knowledge shipped in the package
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))
    # the committed notebook's sources must be the ones _make.py writes
    committed = nbformat.read(TUTORIALS / name, as_version=4)
    fresh = make.build(name, make.NOTEBOOKS[name])
    assert [c.source for c in committed.cells] == [c.source for c in fresh.cells]
    nb = make.execute(fresh, TUTORIALS)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
