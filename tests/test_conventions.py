"""Layering and conventions that a maintainer checks by hand, checked here instead."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "scllm_dsc"


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names |= {f"{mod}.{a.name}" for a in node.names}
    return names


def test_tl_never_imports_pl():
    offenders = {
        str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.startswith("scllm_dsc.pl"))
        for p in (SRC / "tl").glob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}
    code = "import sys, scllm_dsc.tl; print(any(m.startswith('scllm_dsc.pl') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC.parent), "PATH": ""}, check=True)
    assert out.stdout.strip() == "False"


def test_no_global_rng_reseeding():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "np.random.seed(" not in text and "numpy.random.seed(" not in text, path


def test_model_namespace_exports_models_only():
    import scllm_dsc as sd

    assert sd.model.__all__ == ["SCLLMDSC"]
    assert "alignment_scores" in sd.tl.__all__ and "alignment_scores" not in sd.pl.__all__


def test_graph_entry_and_cluster_parameters_have_their_own_uns_keys():
    from scllm_dsc._constants import Key

    assert Key.neighbors(Key.CLUSTER) != Key.CLUSTER
    assert Key.connectivities(Key.CLUSTER) == "scllm_dsc_connectivities"


def test_shared_marker_is_registered():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"shared: ' in text and '"slow: ' in text
