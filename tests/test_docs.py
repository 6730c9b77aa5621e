"""The Sphinx documentation builds without warnings (``sphinx-build -W``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_PACKAGES = (
    "sphinx",
    "myst_nb",
    "sphinx_book_theme",
    "sphinx_autodoc_typehints",
    "sphinx_copybutton",
    "sphinxcontrib.bibtex",
)


@pytest.mark.timeout(600)
def test_docs_build_without_warnings(tmp_path):
    for name in DOC_PACKAGES:
        pytest.importorskip(name, reason=f"documentation dependency {name!r} not installed "
                           "(pip install 'scllm-dsc[doc]')")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.setdefault("MPLBACKEND", "Agg")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), "docs", str(tmp_path / "html")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
    )
    log = f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    assert proc.returncode == 0, f"sphinx-build failed:\n{log}"
    html = tmp_path / "html"
    for page in ("index", "api", "method", "tutorials", "benchmarks", "troubleshooting"):
        assert (html / f"{page}.html").is_file(), page
    for func in ("alignment", "views", "training_history", "cluster_genes"):
        text = (html / "generated" / f"scllm_dsc.pl.{func}.html").read_text()
        assert "Parameters" in text, func
    method = (html / "method.html").read_text()
    assert "Sinkhorn" in method and "References" in method
