"""Marker genes of Cell Ontology terms, from explicit, checkable knowledge.

Three sources link a gene to a Cell Ontology (CL) term, each with the text that states it:

- ``"CL"``: markers written into the term's own name, synonyms or definition
  ("CD14-positive monocyte", "expresses CD19", "is negative for CD3", "secretes insulin"),
  resolved to HGNC symbols through the human alias table (CD16 -> FCGR3A, CD56 -> NCAM1);
- ``"gene text"``: a gene's NCBI RefSeq summary that names the cell type ("... secreted by
  pancreatic beta cells"), matched against CL labels and synonyms;
- ``"cellconsensus"``: the consensus marker lists bundled with the optional package
  ``cellconsensus`` (MIT; ``pip install "scllm-dsc[markers]"``), keyed by CL id.

All links are human symbols; other species map their genes to human symbols before lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

MARKERS_INSTALL_HINT = 'pip install "scllm-dsc[markers]"'

#: Protein / antigen names whose alias is ambiguous or missing, as written in CL texts.
#: ``None``: not measurable as one gene's RNA (isoforms, complexes).
PROTEIN_NAMES: dict[str, str | None] = {
    "CD3": "CD3E",
    "CD8": "CD8A",
    "CD16": "FCGR3A",
    "CD20": "MS4A1",
    "CD25": "IL2RA",
    "CD56": "NCAM1",
    "CD45": "PTPRC",
    "CD45RA": None,
    "CD45RO": None,
    "CD45RB": None,
    "IGM": "IGHM",
    "IGD": "IGHD",
    "IGG": None,
    "IGA": None,
    "IGE": None,
    "HLA-DR": "HLA-DRA",
    "MHC": None,
    "TCR": None,
    "NAV1.7": "SCN9A",
    "NAV1.8": "SCN10A",
    "NAV1.9": "SCN11A",
    "NK1.1": None,
}

# a token that looks like a gene/antigen name: "CD14", "Foxp3", "IL-17", "c-kit", "CCR7"
_TOKEN = re.compile(r"^(?:[A-Za-z]{1,8}-?[0-9][A-Za-z0-9\-]*|[A-Z][A-Z0-9\-]{2,}|c-kit)$")
_POSNEG = re.compile(
    r"\b([A-Za-z][A-Za-z0-9\-]*?[A-Za-z0-9])[- ]"
    r"(positive|negative|high|bright|low|dim|\+)(?![A-Za-z])"
)
_EXPRESS = re.compile(
    r"\b(express(?:es|ing)?|(?:is |are )?positive for|(?:is |are )?negative for|lacks?|lacking|"
    r"does not express|do not express|not expressing|secret(?:es|ing)|produc(?:es|ing)|"
    r"contain(?:s|ing)|"
    r"but|while|whereas|except|which|that)\b",
    flags=re.IGNORECASE,
)
# a product named before the verb: "insulin-secreting cell", "Ghrelin secreting cells"
_PRODUCT = re.compile(r"((?:[A-Za-z0-9]+[ -]){1,3}?)(?:secreting|producing)\b", re.IGNORECASE)
_STOP_VERBS = ("but", "while", "whereas", "except", "which", "that")
_NEG_VERBS = ("negative", "lack", "not")
_SPLIT = re.compile(r",|\band\b|\bor\b|/", flags=re.IGNORECASE)
# a dotted name ("Nav1.7", "NK1.1") is one word, not a gene "Nav1" and a number
_WORD = re.compile(r"[A-Za-z0-9\-+]+(?:\.[0-9][A-Za-z0-9\-+]*)*")

#: Terms too general to name a cluster or to carry markers.
TOO_GENERAL = {
    "CL:0000000", "CL:0000003", "CL:0000255", "CL:0000548", "CL:0002371", "CL:0002242",
    "CL:0000010",
}


@dataclass
class MarkerLink:
    """One gene-to-term link with its provenance."""

    term_id: str
    gene: str  # human symbol
    sign: int  # +1 positive marker, -1 negative marker
    weight: float
    source: str  # "CL", "gene text", "cellconsensus"
    text: str  # the statement that makes the link


@dataclass
class CellOntology:
    """Current Cell Ontology terms (labels, synonyms, definitions) and is_a parents."""

    label: dict[str, str]
    synonyms: dict[str, list[str]]
    definition: dict[str, str]
    parents: dict[str, list[str]]
    children: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        ch: dict[str, list[str]] = {t: [] for t in self.label}
        for t, ps in self.parents.items():
            for p in ps:
                ch.setdefault(p, []).append(t)
        self.children = ch

    def ancestors(self, term: str, max_steps: int | None = None) -> dict[str, int]:
        """Ancestors (is_a, within CL) with their distance in steps."""
        return _walk(term, self.parents, max_steps)

    def descendants(self, term: str, max_steps: int | None = None) -> dict[str, int]:
        """Descendants (is_a, within CL) with their distance in steps."""
        return _walk(term, self.children, max_steps)


@lru_cache(maxsize=1)
def cell_ontology() -> CellOntology:
    """The Cell Ontology shipped (offline) with ``cellxgene-ontology-guide``."""
    from ..tl._candidates import ontology_parser

    p = ontology_parser()
    ids = sorted(
        i for i in set(p.get_term_label_to_id_map("CL").values())
        if i.startswith("CL:") and not p.is_term_deprecated(i)
    )
    label = dict(zip(ids, (p.get_term_label(i) for i in ids), strict=True))
    syn = {i: list(p.get_term_synonyms(i) or []) for i in ids}
    desc = {i: p.get_term_description(i) or "" for i in ids}
    known = set(ids)
    parents = {i: [q for q in p.get_term_parents(i) if q in known] for i in ids}
    return CellOntology(label, syn, desc, parents)


class SymbolResolver:
    """Map a gene or antigen name written in a text to a human HGNC symbol."""

    def __init__(
        self,
        symbols: Iterable[str],
        aliases: Mapping[str, str] | None = None,
        full_names: Mapping[str, str] | None = None,
    ) -> None:
        self.symbols = {s.upper(): s for s in symbols}
        self.aliases = {k.upper(): v for k, v in (aliases or {}).items()}
        self.full_names = {k.lower(): v for k, v in (full_names or {}).items()}

    def token(self, tok: str) -> str | None:
        t = tok.strip().rstrip("+").strip("-")
        up = t.upper()
        if up in PROTEIN_NAMES:
            return PROTEIN_NAMES[up]
        if not t or not _TOKEN.match(t):
            return None
        if up in self.symbols:
            return self.symbols[up]
        if up in self.aliases:
            return self.aliases[up]
        up2 = up.replace("-", "")
        if up2 in self.symbols:
            return self.symbols[up2]
        return self.aliases.get(up2)

    def phrase(self, text: str) -> str | None:
        """A gene written by its full name ("insulin", "pancreatic polypeptide")."""
        return self.full_names.get(text.strip().lower())


@lru_cache(maxsize=4)
def human_resolver(knowledge_path: str | None = None) -> SymbolResolver:
    """A :class:`SymbolResolver` from the human gene text and alias tables.

    Reads through :func:`scllm_dsc.knowledge.get_knowledge`, so the default folder
    (``sd.settings.knowledge_dir``) or a given table path is used.
    """
    from ._resolve import get_knowledge
    from ._table import TableKnowledge, read_columns

    kn = get_knowledge(knowledge_path, species="human")
    symbols = kn.symbols()
    aliases = dict(kn.aliases()) if hasattr(kn, "aliases") else {}
    full: dict[str, str] = {}
    if isinstance(kn, TableKnowledge):
        try:
            cols = read_columns(kn.path, ["symbol", "full_name"], what="gene text table",
                                help="")
            counts: dict[str, int] = {}
            for s, n in zip(cols["symbol"], cols["full_name"], strict=True):
                n = n.strip().lower()
                if n:
                    counts[n] = counts.get(n, 0) + 1
                    full.setdefault(n, s.strip())
            full = {n: s for n, s in full.items() if counts[n] == 1}
            # hormones are often named by their mature peptide
            for n, s in list(full.items()):
                if n.endswith(" prepropeptide") or n.endswith(" precursor"):
                    full.setdefault(n.rsplit(" ", 1)[0], s)
                    if " and " in n:
                        full.setdefault(n.split(" and ")[0], s)
        except Exception:  # noqa: BLE001 - a table without full names: no phrase lookup
            full = {}
    return SymbolResolver(symbols, aliases, full)


def _names_of(cl: CellOntology, term: str) -> list[str]:
    return [cl.label[term], *cl.synonyms.get(term, [])]


def _sign_weight(word: str) -> tuple[int, float]:
    """``"negative"``: absent; ``"low"``/``"dim"``: weakly absent; else present."""
    w = word.lower()
    if w == "negative":
        return -1, 1.0
    if w in ("low", "dim"):
        return -1, 0.5
    return 1, 1.0


def parse_ontology_markers(cl: CellOntology, resolve: SymbolResolver,
                           terms: Iterable[str] | None = None) -> list[MarkerLink]:
    """Markers stated in CL names, synonyms and definitions."""
    out: list[MarkerLink] = []
    for t in terms if terms is not None else cl.label:
        if t not in cl.label:
            continue
        found: dict[tuple[str, int], MarkerLink] = {}

        def add(gene, sign, weight, text, t=t, found=found):
            if gene is None:
                return
            k = (gene, sign)
            if k not in found or found[k].weight < weight:
                found[k] = MarkerLink(t, gene, sign, weight, "CL", text)

        for name in _names_of(cl, t):
            for m in _POSNEG.finditer(name):
                g = resolve.token(m.group(1))
                sign, w = _sign_weight(m.group(2))
                add(g, sign, w, f"{t} name: '{name}'")
        d = cl.definition.get(t, "")
        for text, where in [*((n, "name") for n in _names_of(cl, t)), (d, "definition")]:
            for m in _PRODUCT.finditer(text):
                words = _WORD.findall(m.group(1))
                # the longest run of words ending before the verb that is a gene's name
                g = next((p for i in range(len(words))
                          if (p := resolve.phrase(" ".join(words[i:])))), None)
                add(g, 1, 1.0, f"{t} {where}: '...{m.group(0).strip()}...'")
        for m in _POSNEG.finditer(d):
            g = resolve.token(m.group(1))
            sign, w = _sign_weight(m.group(2))
            add(g, sign, w, f"{t} definition: '...{m.group(0)}...'")
        verbs = list(_EXPRESS.finditer(d))
        for i, m in enumerate(verbs):
            verb = m.group(1).lower()
            if verb in _STOP_VERBS:
                continue
            end = verbs[i + 1].start() if i + 1 < len(verbs) else len(d)
            rest = re.split(r"[;:()]|\.(?![0-9])", d[m.end():end])[0]
            sign = -1 if any(v in verb for v in _NEG_VERBS) else 1
            secretes = verb.startswith(("secret", "produc", "contain"))
            for part in _SPLIT.split(rest)[:8]:
                words = [w for w in _WORD.findall(part) if w.lower() not in ("the", "a", "an")]
                if not words:
                    continue
                g = resolve.phrase(" ".join(words[:3])) or resolve.phrase(" ".join(words[:2]))
                g = g or resolve.phrase(words[0])
                if g is None and not secretes:
                    g = next((r for r in map(resolve.token, words[:4]) if r), None)
                add(g, sign, 1.0, f"{t} definition: '...{d[m.start():end].strip()[:120]}...'")
        out.extend(found.values())
    return out


def gene_text_markers(cl: CellOntology, texts: Mapping[str, str],
                      terms: Iterable[str]) -> list[MarkerLink]:
    """Genes whose text names a term (label or synonym, whole words, case-insensitive).

    A gene that names many terms is a weak link: each link weighs ``1 / n_terms_named``,
    times 0.5 (a mention is weaker evidence than a stated marker).
    """
    names: dict[str, str] = {}
    for t in terms:
        if t not in cl.label or t in TOO_GENERAL:
            continue
        for n in _names_of(cl, t):
            n = n.strip().lower()
            # short or generic names ("cell", "T cell" is fine) would match everywhere
            if len(n) >= 6 and n not in names:
                names[n] = t
    if not names:
        return []
    pattern = re.compile(
        r"\b(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        + r")s?\b", flags=re.IGNORECASE,
    )
    out: list[MarkerLink] = []
    for gene, text in texts.items():
        hits: dict[str, str] = {}
        for sent in re.split(r"(?<=[.;])\s+", text):
            for m in pattern.finditer(sent):
                hits.setdefault(names[m.group(1).lower()], sent.strip()[:200])
        if hits:
            w = 0.5 / len(hits)
            out += [MarkerLink(t, gene, 1, w, "gene text", f"{gene}: '{s}'")
                    for t, s in hits.items()]
    return out


@lru_cache(maxsize=2)
def _consensus_table():
    try:
        import cellconsensus  # noqa: F401
        from cellconsensus.consensus.markers import DATA_DIR
    except ImportError as err:
        raise ImportError(
            f"The marker database needs the optional package `cellconsensus`: run "
            f"`{MARKERS_INSTALL_HINT}`, or pass `sources=` without 'cellconsensus'."
        ) from err
    import pickle

    with open(DATA_DIR / "consensus_cache_full.pkl", "rb") as fh:
        cache = pickle.load(fh)
    return cache["consensus"], cache.get("n_sources", {})


def consensus_markers(terms: Iterable[str], n_top: int = 25) -> list[MarkerLink]:
    """The top ``n_top`` consensus markers of each term from ``cellconsensus``.

    Weight: the gene's consensus score relative to the term's best gene, times the term's
    reliability ``n_sources / (n_sources + 5)`` (a list from one study weighs little).
    """
    cons, n_src = _consensus_table()
    out: list[MarkerLink] = []
    for t in terms:
        d = cons.get(t)
        if not d or t in TOO_GENERAL:
            continue
        items = sorted(((g, float(s)) for g, s in d.items()), key=lambda kv: -kv[1])[:n_top]
        top = items[0][1] if items and items[0][1] > 0 else 1.0
        rel = n_src.get(t, 0) / (n_src.get(t, 0) + 5.0)
        for g, s in items:
            out.append(MarkerLink(
                t, g, 1, rel * s / top, "cellconsensus",
                f"cellconsensus consensus score {s:.0f} ({n_src.get(t, 0)} sources)",
            ))
    return out


def consensus_sources(terms: Iterable[str]) -> dict[str, int]:
    """How many published marker lists the ``cellconsensus`` database merged for each term
    (0 for terms it does not cover): a measure of how often a cell type is reported."""
    _, n_src = _consensus_table()
    return {t: int(n_src.get(t, 0)) for t in terms}


def consensus_available() -> bool:
    """Whether the optional marker database (``cellconsensus``) is installed."""
    import importlib.util

    return importlib.util.find_spec("cellconsensus") is not None


def to_human(
    genes: Iterable[str], species: str, orthologs: Mapping[str, str] | None = None
) -> np.ndarray:
    """Human symbol per gene ("" when none): identity for human; orthologs (or upper case)
    for mouse. ``R``-style ``.1`` suffixes are dropped."""
    out = []
    for g in genes:
        g = re.sub(r"\.\d+$", "", str(g))
        if species == "human":
            out.append(g)
        elif orthologs is not None and g in orthologs:
            out.append(orthologs[g])
        else:
            out.append(g.upper())
    return np.asarray(out, dtype=object)


@lru_cache(maxsize=2)
def mouse_to_human(knowledge_path: str | None = None) -> dict[str, str]:
    """One-to-one mouse -> human symbols from ``human_mouse_orthologs.tsv.gz`` next to the
    human gene text table (empty when absent)."""
    from ._resolve import get_knowledge
    from ._table import TableKnowledge

    try:
        kn = get_knowledge(knowledge_path, species="human")
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(kn, TableKnowledge):
        return {}
    path = kn.path.parent / "human_mouse_orthologs.tsv.gz"
    if not path.is_file():
        return {}
    df = pd.read_csv(path, sep="\t", usecols=["human_symbol", "mouse_symbol"], dtype=str)
    df = df.dropna().drop_duplicates()
    df = df[~df["mouse_symbol"].duplicated(keep=False)]
    return dict(zip(df["mouse_symbol"], df["human_symbol"], strict=True))


def marker_table(links: list[MarkerLink]) -> pd.DataFrame:
    return pd.DataFrame(
        [(m.term_id, m.gene, m.sign, m.weight, m.source, m.text) for m in links],
        columns=["term_id", "gene", "sign", "weight", "source", "text"],
    )


def collect_markers(
    terms: Iterable[str],
    sources: Iterable[str],
    *,
    knowledge: str | None = None,
    n_consensus: int = 25,
    genes: Iterable[str] | None = None,
    resolver: Callable[[], SymbolResolver] | None = None,
) -> pd.DataFrame:
    """Marker links of ``terms`` from the named sources (``"CL"``, ``"gene text"``,
    ``"cellconsensus"``) as a table; gene-text links only for ``genes`` (human symbols)
    when given."""
    terms = list(dict.fromkeys(terms))
    sources = set(sources)
    unknown = sources - {"CL", "gene text", "cellconsensus"}
    if unknown:
        raise ValueError(
            f"Unknown marker sources {sorted(unknown)}; use 'CL', 'gene text', 'cellconsensus'."
        )
    cl = cell_ontology()
    links: list[MarkerLink] = []
    res = None
    if "CL" in sources or "gene text" in sources:
        res = resolver() if resolver is not None else human_resolver(knowledge)
    if "CL" in sources:
        links += parse_ontology_markers(cl, res, terms)
    if "gene text" in sources:
        from ._resolve import get_knowledge

        kn = get_knowledge(knowledge, species="human")
        wanted = sorted(kn.symbols() if genes is None else set(genes) & set(kn.symbols()))
        texts = kn.texts(wanted)
        links += gene_text_markers(cl, texts, terms)
    if "cellconsensus" in sources:
        links += consensus_markers(terms, n_top=n_consensus)
    return marker_table(links)


def _walk(term: str, edges: dict[str, list[str]], max_steps: int | None) -> dict[str, int]:
    """Breadth-first walk from ``term`` along ``edges``: each reached term with its distance."""
    out: dict[str, int] = {}
    frontier, step = [term], 0
    while frontier and (max_steps is None or step < max_steps):
        step += 1
        nxt = []
        for t in frontier:
            for u in edges.get(t, ()):
                if u not in out:
                    out[u] = step
                    nxt.append(u)
        frontier = nxt
    return out
