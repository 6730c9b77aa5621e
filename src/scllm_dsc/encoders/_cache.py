"""On-disk embedding cache: one SQLite database per model, text hash -> float32 vector."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scanpy import logging as logg

_CHUNK = 500  # SQLite host parameters per query


def text_key(text: str, *parts) -> bytes:
    """SHA-256 of a text and the options that change its embedding."""
    h = hashlib.sha256(text.encode("utf-8"))
    for p in parts:
        h.update(b"\x00")
        h.update(str(p).encode("utf-8"))
    return h.digest()


def safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "__", name).strip("_") or "model"


class EmbeddingCache:
    """Embeddings of one model in an SQLite database.

    Safe with concurrent processes (WAL journal, busy timeout) and atomic per write
    transaction. A corrupt database is moved aside with a warning and recreated.
    """

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None

    # -- connection -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as e:  # e.g. file systems without shared memory
                if _is_lock_error(e):
                    raise
            conn.execute(
                "CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, vec BLOB NOT NULL)"
            )
            conn.commit()
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _recover(self, err: Exception) -> None:
        self.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        logg.warning(
            f"embedding cache {str(self.path)!r} is unreadable ({err}); moved it to "
            f"{str(aside)!r} and starting a fresh cache."
        )
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                try:
                    p.replace(Path(str(aside) + suffix))
                except OSError:
                    p.unlink(missing_ok=True)

    def _run(self, fn):
        try:
            return fn(self._connect())
        except sqlite3.DatabaseError as e:
            if _is_lock_error(e):
                raise
            self._recover(e)
            return fn(self._connect())

    # -- API --------------------------------------------------------------------------
    def get_many(self, keys: Sequence[bytes], dim: int | None = None) -> dict[bytes, np.ndarray]:
        """Vectors for the keys present in the cache."""
        keys = list(dict.fromkeys(keys))

        def fn(conn):
            found = {}
            for i in range(0, len(keys), _CHUNK):
                part = keys[i : i + _CHUNK]
                q = f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(part))})"
                for k, v in conn.execute(q, part):
                    vec = np.frombuffer(v, dtype=np.float32)
                    if dim is None or vec.size == dim:
                        found[bytes(k)] = vec
            return found

        return self._run(fn)

    def put_many(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store vectors (one write transaction)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = [(k, vectors[i].tobytes()) for i, k in enumerate(keys)]

        def fn(conn):
            with conn:
                conn.executemany("INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)", rows)

        self._run(fn)

    def __len__(self) -> int:
        return self._run(lambda c: c.execute("SELECT COUNT(*) FROM emb").fetchone()[0])


def _is_lock_error(e: Exception) -> bool:
    msg = str(e).lower()
    return isinstance(e, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg)
