"""Gene text vectors of the default model shipped with the package (float16).

The vectors were computed by :class:`~scllm_dsc.encoders.TextEncoder` with the default
model on CPU in float32 (``scripts/build_knowledge.py``) and are looked up by the SHA-256 of
the exact text, so a changed text is never served a stale vector. They are used only by an
encoder whose model files, pooling, context length and weight dtype equal those recorded
with the vectors (:func:`default_vectors_spec`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from pathlib import Path

import numpy as np

VECTORS_FILE = "default_model_gene_vectors.npz"
_LOCK = threading.Lock()


def vectors_path() -> Path:
    """Where the shipped vectors live (inside the knowledge package data)."""
    return Path(__file__).resolve().parents[1] / "knowledge" / "data" / VECTORS_FILE


def text_sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def model_revision(folder: str | Path) -> str:
    """SHA-256 over a local model folder's weight, config and tokenizer files (cached)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix in {".safetensors", ".bin", ".json", ".txt", ".model"}:
            if f.name == "README.md":
                continue
            st = f.stat()
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(_file_sha256(str(f), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()[:16]


def default_vectors_spec(encoder) -> dict | None:
    """Everything that changes a vector of ``encoder``, or ``None`` for a non-local model."""
    if not encoder._resolved.local:
        return None
    return {
        "model": encoder.name,
        "revision": model_revision(encoder._resolved.source),
        "pooling": encoder.pooling,
        "max_length": int(encoder.max_length),
        "dtype": str(encoder.torch_dtype).replace("torch.", ""),
        "mode": "trunc",
    }


class PrecomputedVectors:
    """Read-only table ``sha256(text) -> float16 vector`` with the spec it was made with."""

    def __init__(self, path: str | Path) -> None:
        with np.load(path, allow_pickle=False) as z:
            self.spec: dict = json.loads(str(z["spec"]))
            self.vectors = np.asarray(z["vectors"])
            keys = np.asarray(z["text_sha256"])
            self.symbols = np.asarray(z["symbol"])
            self.species = np.asarray(z["species"])
        self._index = {bytes(k): i for i, k in enumerate(keys)}

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, texts) -> dict[int, np.ndarray]:
        """``{position in texts: float32 vector}`` for the texts with a shipped vector."""
        out = {}
        for i, t in enumerate(texts):
            row = self._index.get(text_sha256(t))
            if row is not None:
                out[i] = self.vectors[row].astype(np.float32)
        return out


_LOADED: dict[str, PrecomputedVectors | None] = {}


def shipped_vectors() -> PrecomputedVectors | None:
    """The shipped vectors, loaded once per process (``None`` when the file is absent)."""
    path = vectors_path()
    key = str(path)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = PrecomputedVectors(path) if path.is_file() else None
        return _LOADED[key]
