"""Match a dataset's gene identifiers to the canonical symbols of a knowledge source."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._base import KnowledgeSource, lower_index

ROUTES = ("symbol", "alias", "ensembl")

_ENSEMBL = re.compile(r"^(ENS[A-Z]*G\d{11})(\.\d+)?$")
_UNIQUE_SUFFIX = re.compile(r"^(.+)\.(\d+)$")  # R make.unique ("PNRC2.1"), version suffixes


@dataclass
class GeneMatch:
    """Result of :func:`match_genes`: one entry per input gene.

    Attributes
    ----------
    genes
        The input identifiers.
    symbols
        Canonical symbol each gene was matched to (``None`` if unmatched).
    texts
        The matched gene's text (``None`` if unmatched).
    matched_by
        How each gene was matched: ``"symbol"``, ``"alias"``, ``"ensembl"`` or ``""``.
    """

    genes: list[str]
    symbols: list[str | None]
    texts: list[str | None]
    matched_by: np.ndarray

    @property
    def found(self) -> np.ndarray:
        """Boolean mask of the genes with a text."""
        return self.matched_by != ""

    @property
    def coverage(self) -> float:
        """Fraction of the input genes with a text."""
        return float(self.found.mean()) if len(self.genes) else 0.0

    def summary(self) -> dict:
        """Counts per route (``symbol``, ``alias``, ``ensembl``, ``unmatched``), plus totals."""
        out: dict = {"n_genes": len(self.genes)}
        for route in ROUTES:
            out[route] = int((self.matched_by == route).sum())
        out["unmatched"] = int((~self.found).sum())
        out["coverage"] = self.coverage
        return out

    def to_df(self):
        """The match as a :class:`pandas.DataFrame` indexed by the input genes."""
        import pandas as pd

        return pd.DataFrame(
            {"symbol": self.symbols, "matched_by": self.matched_by, "text": self.texts},
            index=pd.Index(self.genes, name="gene"),
        )

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"GeneMatch({s['n_genes']} genes, coverage {s['coverage']:.3f}: "
            f"{s['symbol']} symbol, {s['alias']} alias, {s['ensembl']} ensembl, "
            f"{s['unmatched']} unmatched)"
        )


def _ensembl_id(name: str | None) -> str | None:
    if name is None:
        return None
    m = _ENSEMBL.match(str(name).strip())
    return m.group(1) if m else None


def _candidates(gene: str) -> list[str]:
    """The name; with R's make.names dots turned back into dashes (``ALMS1.IT1`` ->
    ``ALMS1-IT1``); without an R make.unique / version suffix (``PNRC2.1`` -> ``PNRC2``)."""
    out = [gene]
    if "." in gene:
        out.append(gene.replace(".", "-"))
    m = _UNIQUE_SUFFIX.match(gene)
    if m:
        out.append(m.group(1))
    return out


def _valid(x) -> bool:
    return x is not None and not (isinstance(x, float) and np.isnan(x)) and str(x).strip() != ""


def match_genes(
    genes: Sequence[str],
    source: KnowledgeSource,
    *,
    ensembl_ids: Sequence[str | None] | None = None,
) -> GeneMatch:
    """Match gene identifiers to the canonical symbols of a knowledge source.

    For each gene, in order: (1) the exact symbol; (2) the name without an R ``make.unique`` or
    version suffix (``PNRC2.1`` -> ``PNRC2``); (3) a case-insensitive match, only where it is
    unique (``CD3E`` -> ``Cd3e`` in a mouse table); (4) an alias or previous symbol
    (:meth:`KnowledgeSource.aliases`); (5) the Ensembl gene ID, if the name is one
    (``ENSG00000121410.15``) or given in ``ensembl_ids``. Several inputs may map to one symbol.

    Parameters
    ----------
    genes
        Gene identifiers, e.g. ``adata.var_names``.
    source
        The knowledge source (see :func:`~scllm_dsc.knowledge.get_knowledge`).
    ensembl_ids
        Optional Ensembl gene ID per gene (e.g. ``adata.var["gene_ids"]``), used when the name
        itself does not match.

    Returns
    -------
    A :class:`GeneMatch` with the matched symbol, text and route of every gene.
    """
    genes = [str(g) for g in genes]
    if ensembl_ids is not None:
        ensembl_ids = list(ensembl_ids)
        if len(ensembl_ids) != len(genes):
            raise ValueError(
                f"ensembl_ids has {len(ensembl_ids)} entries but there are {len(genes)} genes; "
                "give one Ensembl ID (or None) per gene."
            )

    known = source.symbols()
    open_source = known is None
    if open_source:
        # An open source (NCBI): ask for every candidate name; what comes back is what exists.
        names = {c for g in genes if _ensembl_id(g) is None for c in _candidates(g)}
        fetched = source.texts(sorted(names))
        known = set(fetched)
    aliases: Mapping[str, str] = source.aliases()
    ens_map: Mapping[str, str] = source.ensembl()
    lower_known: dict[str, str | None] | None = None
    lower_alias: dict[str, str | None] | None = None

    symbols: list[str | None] = [None] * len(genes)
    routes = np.full(len(genes), "", dtype=object)
    for i, gene in enumerate(genes):
        sym, route = None, ""
        eid = _ensembl_id(gene)
        cands = [] if eid is not None else _candidates(gene)
        # (1)-(2) exact symbol, possibly without suffix
        for c in cands:
            if c in known:
                sym, route = c, "symbol"
                break
        # (3) unique case-insensitive symbol
        if sym is None and cands:
            if lower_known is None:
                lower_known = lower_index(known) if open_source else source._case_index()
            for c in cands:
                hit = lower_known.get(c.lower())
                if hit is not None:
                    sym, route = hit, "symbol"
                    break
        # (4) alias / previous symbol (exact, then unique case-insensitive)
        if sym is None and cands and aliases:
            for c in cands:
                hit = aliases.get(c)
                if hit is not None and hit in known:
                    sym, route = hit, "alias"
                    break
            if sym is None:
                if lower_alias is None:
                    lower_alias = lower_index(aliases)
                for c in cands:
                    a = lower_alias.get(c.lower())
                    hit = aliases.get(a) if a is not None else None
                    if hit is not None and hit in known:
                        sym, route = hit, "alias"
                        break
        # (5) Ensembl gene ID, from the name or the per-gene column
        if sym is None and ens_map:
            for e in (eid, _ensembl_id(ensembl_ids[i]) if ensembl_ids is not None and
                      _valid(ensembl_ids[i]) else None):
                hit = ens_map.get(e) if e is not None else None
                if hit is not None and hit in known:
                    sym, route = hit, "ensembl"
                    break
        symbols[i], routes[i] = sym, route

    matched = sorted({s for s in symbols if s is not None})
    text_of = source.texts(matched) if matched else {}
    texts: list[str | None] = []
    for i, s in enumerate(symbols):
        t = text_of.get(s) if s is not None else None
        if t is None and s is not None:  # listed but without text: treat as unmatched
            symbols[i], routes[i] = None, ""
        texts.append(t)
    return GeneMatch(genes=genes, symbols=symbols, texts=texts, matched_by=routes.astype(str))
