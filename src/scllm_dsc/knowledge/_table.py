"""Gene knowledge from tables (TSV/CSV, optionally gzipped) and from user dictionaries."""

from __future__ import annotations

import gzip
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from ._base import KnowledgeSource, lower_index
from ._species import normalize_species

_SPECIES_FROM_NAME = re.compile(r"^([A-Za-z]+)_gene_text")
_ENS_VERSION = re.compile(r"\.\d+$")
_TRUE = {"true", "t", "1", "yes", "y"}

# Parsed tables, keyed by (resolved path, mtime_ns, size, columns): each file is parsed once
# per process, and again only when it changes on disk.
_TABLE_CACHE: dict[tuple, dict[str, list[str]]] = {}
_CACHE_LOCK = threading.Lock()

_TEXT_TABLE_HELP = (
    "A gene text table is a TSV or CSV file (optionally .gz) with one row per gene and at least "
    "the columns 'symbol' (the gene symbol, e.g. CD3E) and 'text' (the description to embed, "
    "e.g. 'CD3E: CD3 epsilon subunit of T-cell receptor complex. ...')."
)


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _separator(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] == ".csv":
        return ","
    if suffixes and suffixes[-1] in (".tsv", ".tab"):
        return "\t"
    with _open_text(path) as fh:
        header = fh.readline()
    return "\t" if header.count("\t") >= header.count(",") else ","


def read_columns(
    path: str | os.PathLike, columns: Sequence[str], *, what: str = "table", help: str = ""
) -> dict[str, list[str]]:
    """Read ``columns`` of a TSV/CSV file as lists of strings, cached per path and mtime."""
    path = Path(path).expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"The {what} {str(path)!r} does not exist.") from None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, tuple(columns))
    with _CACHE_LOCK:
        cached = _TABLE_CACHE.get(key)
    if cached is not None:
        return cached

    import pandas as pd

    try:
        sep = _separator(path)
        header = pd.read_csv(path, sep=sep, nrows=0).columns
    except Exception as e:  # noqa: BLE001 - any parse failure gets the same explanation
        raise ValueError(f"Could not read the {what} {str(path)!r}: {e}. {help}") from e
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(
            f"The {what} {str(path)!r} lacks the column(s) {missing}; it has {list(header)}. "
            f"{help}"
        )
    try:
        df = pd.read_csv(
            path, sep=sep, usecols=list(columns), dtype=str, keep_default_na=False,
            na_filter=False,
        )
    except Exception as e:  # noqa: BLE001 - truncated gzip, bad rows, encoding...
        raise ValueError(
            f"Could not read the {what} {str(path)!r} ({type(e).__name__}: {e}); the file may be "
            f"truncated or corrupt (an interrupted download?): download or write it again. {help}"
        ) from e
    out = {c: df[c].tolist() for c in columns}
    with _CACHE_LOCK:
        _TABLE_CACHE[key] = out
    return out


def _strip_ensembl_version(ensembl_id: str) -> str:
    return _ENS_VERSION.sub("", ensembl_id.strip())


class _MappingKnowledge(KnowledgeSource):
    """Shared logic of sources backed by an in-memory ``{symbol: text}`` dictionary."""

    def _texts(self) -> dict[str, str]:
        raise NotImplementedError

    _symbol_set: set[str] | None = None
    _lower: dict[str, str | None] | None = None

    def texts(self, symbols: Sequence[str]) -> dict[str, str]:
        table = self._texts()
        return {s: table[s] for s in dict.fromkeys(symbols) if s in table}

    def symbols(self) -> set[str]:
        """All symbols with a text (a cached set: do not modify it)."""
        if self._symbol_set is None:
            self._symbol_set = set(self._texts())
        return self._symbol_set

    def _case_index(self) -> dict[str, str | None]:
        if self._lower is None:
            self._lower = lower_index(self.symbols())
        return self._lower

    def __len__(self) -> int:
        return len(self._texts())


class DictKnowledge(_MappingKnowledge):
    """Gene texts supplied by the user as ``{symbol: text}``.

    Parameters
    ----------
    mapping
        Gene symbol -> text to embed. Empty texts are dropped.
    species
        Species of the genes, if known.
    """

    def __init__(self, mapping: Mapping[str, str], species: str | None = None) -> None:
        if not isinstance(mapping, Mapping):
            raise TypeError(f"DictKnowledge needs a mapping {{symbol: text}}, got {type(mapping)}.")
        bad = [k for k, v in mapping.items() if not isinstance(v, str)]
        if bad:
            raise TypeError(
                f"Gene texts must be strings; got non-strings for {bad[:5]} "
                f"(e.g. {type(mapping[bad[0]]).__name__})."
            )
        self._mapping = {str(k): v for k, v in mapping.items() if v.strip()}
        self.species = None if species is None else normalize_species(species)
        self.name = "dict"

    def _texts(self) -> dict[str, str]:
        return self._mapping


class TableKnowledge(_MappingKnowledge):
    """Gene texts from a table file with the columns ``symbol`` and ``text``.

    Parameters
    ----------
    path
        TSV or CSV file, optionally gzipped (``.gz``), e.g. ``human_gene_text.tsv.gz``.
    species
        Species of the genes; by default taken from a file name ``{species}_gene_text...``.
    alias_table
        Table with the columns ``alias``, ``symbol`` and optionally ``ambiguous`` (rows marked
        ambiguous are skipped; so are aliases that point to more than one symbol).
        ``"auto"`` uses ``{species}_alias_to_symbol.tsv.gz`` next to ``path`` if present;
        ``None`` uses none.
    ensembl_table
        Table with the columns ``ensembl_id`` and ``symbol``. ``"auto"`` uses
        ``{species}_ensembl_to_symbol.tsv.gz`` next to ``path`` if present; ``None`` none.

    Notes
    -----
    Files are read on first use and parsed once per process (again only if they change).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        species: str | None = None,
        alias_table: str | os.PathLike | Literal["auto"] | None = "auto",
        ensembl_table: str | os.PathLike | Literal["auto"] | None = "auto",
    ) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(
                f"Gene text table {str(self.path)!r} not found. {_TEXT_TABLE_HELP}"
            )
        if species is None:
            m = _SPECIES_FROM_NAME.match(self.path.name)
            species = m.group(1) if m else None
        self.species = None if species is None else normalize_species(species)
        self.name = str(self.path)
        self.alias_path = self._sibling(alias_table, "alias_to_symbol")
        self.ensembl_path = self._sibling(ensembl_table, "ensembl_to_symbol")
        self._table: dict[str, str] | None = None
        self._aliases: dict[str, str] | None = None
        self._ensembl: dict[str, str] | None = None

    def _sibling(self, given, kind: str) -> Path | None:
        if given is None or given is False:
            return None
        if isinstance(given, str) and given == "auto":
            if self.species is None:
                return None
            candidate = self.path.parent / f"{self.species}_{kind}.tsv.gz"
            return candidate if candidate.is_file() else None
        p = Path(given).expanduser()
        if not p.is_file():
            what = kind.replace("_", " ")
            raise FileNotFoundError(f"The {what} table {str(p)!r} does not exist.")
        return p

    def _texts(self) -> dict[str, str]:
        if self._table is None:
            cols = read_columns(
                self.path, ["symbol", "text"], what="gene text table", help=_TEXT_TABLE_HELP
            )
            table: dict[str, str] = {}
            for sym, text in zip(cols["symbol"], cols["text"], strict=True):
                sym = sym.strip()
                if sym and text.strip() and sym not in table:
                    table[sym] = text
            self._table = table
        return self._table

    def aliases(self) -> Mapping[str, str]:
        if self._aliases is None:
            self._aliases = {} if self.alias_path is None else self._read_aliases()
        return self._aliases

    def _read_aliases(self) -> dict[str, str]:
        help_ = (
            "An alias table has the columns 'alias', 'symbol' and optionally 'ambiguous' "
            "(True/False)."
        )
        import pandas as pd

        try:
            sep = _separator(self.alias_path)
            header = pd.read_csv(self.alias_path, sep=sep, nrows=0).columns
        except Exception as e:  # noqa: BLE001
            raise ValueError(
                f"Could not read the alias table {str(self.alias_path)!r}: {e}. {help_}"
            ) from e
        cols = ["alias", "symbol"] + (["ambiguous"] if "ambiguous" in header else [])
        t = read_columns(self.alias_path, cols, what="alias table", help=help_)
        flags = t.get("ambiguous", [""] * len(t["alias"]))
        targets: dict[str, set[str]] = {}
        for alias, sym, amb in zip(t["alias"], t["symbol"], flags, strict=True):
            alias, sym = alias.strip(), sym.strip()
            if not alias or not sym or amb.strip().lower() in _TRUE:
                targets.setdefault(alias, set()).add("")  # poison: ambiguous
                continue
            targets.setdefault(alias, set()).add(sym)
        return {a: next(iter(s)) for a, s in targets.items() if len(s) == 1 and "" not in s}

    def ensembl(self) -> Mapping[str, str]:
        if self._ensembl is None:
            self._ensembl = {} if self.ensembl_path is None else self._read_ensembl()
        return self._ensembl

    def _read_ensembl(self) -> dict[str, str]:
        t = read_columns(
            self.ensembl_path,
            ["ensembl_id", "symbol"],
            what="Ensembl table",
            help="An Ensembl table has the columns 'ensembl_id' and 'symbol'.",
        )
        targets: dict[str, set[str]] = {}
        for eid, sym in zip(t["ensembl_id"], t["symbol"], strict=True):
            eid, sym = _strip_ensembl_version(eid), sym.strip()
            if eid and sym:
                targets.setdefault(eid, set()).add(sym)
        return {e: next(iter(s)) for e, s in targets.items() if len(s) == 1}
