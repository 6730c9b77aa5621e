"""The interface every gene knowledge source implements."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

_PROVIDED_BY = re.compile(r"\s*\[provided by [^\]]*\]\.?\s*$", flags=re.IGNORECASE)


def build_gene_text(symbol: str, full_name: str | None, summary: str | None = None) -> str:
    """Build a gene's text the way the shared tables do: ``"SYMBOL: full name. summary"``.

    The summary is optional; NCBI's trailing ``[provided by RefSeq, ...]`` note is dropped.
    """
    full_name = (full_name or "").strip().rstrip(".")
    text = f"{symbol}: {full_name}." if full_name else f"{symbol}."
    summary = _PROVIDED_BY.sub("", (summary or "").strip()).strip()
    if summary:
        text = f"{text} {summary}"
    return text


def lower_index(names) -> dict[str, str | None]:
    """Lower-cased name -> name, or ``None`` where two names differ only by case."""
    idx: dict[str, str | None] = {}
    for n in names:
        k = n.lower()
        idx[k] = None if (k in idx and idx[k] != n) else n
    return idx


class KnowledgeSource(ABC):
    """A source of gene texts (e.g. NCBI Gene descriptions) keyed by canonical gene symbol.

    Subclasses implement :meth:`texts`; :meth:`aliases`, :meth:`ensembl` and :meth:`symbols`
    give what :func:`~scllm_dsc.knowledge.match_genes` needs to map a dataset's gene names.

    Attributes
    ----------
    name
        Provenance of the texts (a table path, ``"ncbi"``, ``"dict"``), stored with results.
    species
        Species of the genes (``"human"``, ``"mouse"``) when known, else ``None``.
    """

    name: str = "knowledge"
    species: str | None = None

    @abstractmethod
    def texts(self, symbols: Sequence[str]) -> dict[str, str]:
        """Texts of ``symbols``: ``{canonical symbol: text}``, only for the symbols found."""

    def aliases(self) -> Mapping[str, str]:
        """Alias or previous symbol -> canonical symbol (empty when the source has none)."""
        return {}

    def ensembl(self) -> Mapping[str, str]:
        """Ensembl gene ID without version -> canonical symbol (empty when unknown)."""
        return {}

    def symbols(self) -> set[str] | None:
        """All canonical symbols when known upfront (tables), ``None`` for open sources."""
        return None

    def _case_index(self) -> dict[str, str | None]:
        """Lower-cased symbol -> symbol (``None`` if not unique); sources may cache it."""
        return lower_index(self.symbols() or ())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, species={self.species!r})"
