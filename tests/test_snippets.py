"""Every Python code block of README.md and of the docs' quick start runs as written, offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _quick_start() -> str:
    text = (ROOT / "docs" / "index.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return section


SNIPPETS = {
    **{
        f"README.md[{i}]": block
        for i, block in enumerate(_python_blocks((ROOT / "README.md").read_text()))
    },
    **{f"docs quick start[{i}]": block for i, block in enumerate(_python_blocks(_quick_start()))},
}


def test_there_are_snippets():
    assert any(k.startswith("README") for k in SNIPPETS)
    assert any(k.startswith("docs") for k in SNIPPETS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_snippet_runs_as_written(name, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)  # a user's working folder: nothing of the repository
    monkeypatch.delenv("SCLLM_DSC_DATA", raising=False)  # the shipped knowledge only
    namespace: dict = {"__name__": "__snippet__"}
    exec(compile(SNIPPETS[name], name, "exec"), namespace)  # noqa: S102 - the point of the test
    plt.close("all")
    adata = namespace["adata"]
    assert "scllm_dsc" in adata.obs
    assert adata.obs["scllm_dsc"].nunique() >= 2
