"""Free-text cell type names to Cell Ontology terms: explicit rules first, the language model
as the bridge where the names differ.

A name such as ``"CD8+ cytotoxic T"``, ``"CD14+ Monocytes"`` or ``"interneurons"`` is
rewritten in the ontology's own style (``"+"`` -> ``"-positive"``, plurals, a bare ``T`` /
``B`` / ``NK``), then looked up among the Cell Ontology labels and exact synonyms. A name that
is still not found is embedded with the text encoder and ranked against every candidate
term's label and synonyms by cosine similarity; optionally (``use_markers=True``) the marker
antigens the name states (``CD8+`` -> CD8A present) add to the score of terms whose own names
or definitions state the same marker and subtract from terms stating the opposite.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._utils import l2_normalize
from ._cell_markers import _POSNEG, _sign_weight

#: Added to (subtracted from) a term's similarity per marker the name and the term agree
#: (disagree) on.
MARKER_BONUS = 0.1

# last words that already name a cell (CL terms end in "cell" or in one of these)
_CELL_NOUN = re.compile(r"(cell|cyte|blast|phage|phil|neuron|progenitor|precursor|platelet|"
                        r"erythroid)$")
_BARE = {"t": "t cell", "b": "b cell", "nk": "natural killer cell", "dc": "dendritic cell"}
_MARK = re.compile(r"\b([A-Za-z]{1,6}[0-9]+[A-Za-z0-9]*)\s*(\+|-)(?=[\s/,)]|$)")


def normalise_cell_name(name: str) -> str:
    """A cell type name rewritten in the Cell Ontology's style (lower case).

    ``"CD4+/CD45RA+/CD25- Naive T"`` -> ``"cd4-positive cd45ra-positive cd25-negative naive
    t cell"``; ``"CD14+ Monocytes"`` -> ``"cd14-positive monocyte"``.
    """
    s = str(name).strip()
    s = _MARK.sub(lambda m: f"{m.group(1)}-{'positive' if m.group(2) == '+' else 'negative'}", s)
    s = s.replace("_", " ").replace("/", " ")
    s = re.sub(r"\s+", " ", s).strip().lower()
    # plurals of cell nouns: "monocytes" -> "monocyte", "NK cells" -> "nk cell"
    words = [w[:-1] if w.endswith("s") and _CELL_NOUN.search(w[:-1]) else w
             for w in s.split(" ")]
    if words and words[-1] in _BARE:
        words[-1] = _BARE[words[-1]]
    elif words and words[-1] and not _CELL_NOUN.search(words[-1]):
        words.append("cell")  # "alpha" -> "alpha cell", "ductal" -> "ductal cell"
    return " ".join(words)


def _name_markers(text: str, resolve) -> dict[str, int]:
    """``{gene: sign}`` stated in a (normalised) name, e.g. ``cd8-positive`` -> CD8A: +1."""
    out: dict[str, int] = {}
    for m in _POSNEG.finditer(text):
        g = resolve.token(m.group(1))
        if g is not None:
            out[g] = _sign_weight(m.group(2))[0]
    return out


def _term_marker_signs(cl, resolve, terms) -> dict[str, dict[str, int]]:
    from ._cell_markers import parse_ontology_markers

    out: dict[str, dict[str, int]] = {}
    for link in parse_ontology_markers(cl, resolve, terms):
        out.setdefault(link.term_id, {})[link.gene] = link.sign
    return out


def match_cell_types(
    names: Sequence[str],
    terms: Sequence[str] | None = None,
    *,
    encoder=None,
    n_top: int = 3,
    use_model: bool = True,
    use_markers: bool = False,
) -> pd.DataFrame:
    """Rank Cell Ontology terms for each free-text cell type name.

    Parameters
    ----------
    names
        Cell type names as written in a dataset or by a user.
    terms
        Candidate CL ids (default: every current CL term).
    encoder
        Object with ``encode(texts) -> array``; default: the package's default text model
        (:func:`scllm_dsc.encoders.get_encoder`).
    n_top
        Terms returned per name.
    use_model
        Rank names without an exact (normalised) match with the language model; with
        ``False`` they get no term.
    use_markers
        Add the marker agreement between name and term to the similarity (off by default:
        on the curated names of ``benchmarks/name_bridge.py`` it did not help, since
        antigens such as CD45RA and CD45RO resolve to the same gene).

    Returns
    -------
    pandas.DataFrame
        One row per name and rank, with the columns ``name``, ``rank``, ``term_id``,
        ``term_name``, ``score`` (1.0 for a lookup), ``route`` (one of ``"label"``,
        ``"normalised label"``, ``"language model"``, ``"none"``) and ``normalised`` (the
        rewritten name). A match by the language model is a suggestion to check: its cosine
        does not separate right from wrong matches (measurements: the benchmarks page), so no
        threshold is applied.

    Notes
    -----
    Needs the Cell Ontology of ``cellxgene-ontology-guide``
    (``pip install "scllm-dsc[ontology]"``); the language model runs offline with the
    default text model.

    Examples
    --------
    >>> terms = sd.knowledge.match_cell_types(adata.obs["cell_type"].unique(), n_top=1)
    >>> adata.obs["cell_type_ontology_term_id"] = adata.obs["cell_type"].map(
    ...     terms.set_index("name")["term_id"]
    ... )
    """
    from ._cell_markers import cell_ontology, human_resolver

    if isinstance(names, str):
        raise TypeError(
            f"`names` is a list of cell type names, not one string; pass [{names!r}]."
        )
    cl = cell_ontology()
    terms = list(cl.label) if terms is None else [t for t in dict.fromkeys(terms) if t in cl.label]
    if not terms:
        raise ValueError("No candidate term is a current Cell Ontology id.")
    texts, owner = [], []
    for t in terms:
        for n in (cl.label[t], *cl.synonyms.get(t, [])):
            texts.append(n)
            owner.append(t)
    owner = np.asarray(owner)
    exact = {}
    norm_lookup = {}
    for n, t in zip(texts, owner, strict=True):
        exact.setdefault(n.lower(), t)
        norm_lookup.setdefault(normalise_cell_name(n), t)

    rows: list[dict] = []
    todo: list[tuple[str, str]] = []
    for name in dict.fromkeys(map(str, names)):
        norm = normalise_cell_name(name)
        t = exact.get(name.strip().lower())
        route = "label"
        if t is None:
            t, route = norm_lookup.get(norm), "normalised label"
        if t is not None:
            rows.append({"name": name, "rank": 1, "term_id": t, "term_name": cl.label[t],
                         "score": 1.0, "route": route, "normalised": norm})
        elif use_model:
            todo.append((name, norm))
        else:
            rows.append({"name": name, "rank": 1, "term_id": "", "term_name": "",
                         "score": np.nan, "route": "none", "normalised": norm})
    if todo:
        if encoder is None:
            from ..encoders import get_encoder

            encoder = get_encoder()
        E = l2_normalize(np.asarray(encoder.encode(texts, desc="cell type names"), np.float32))
        Q = l2_normalize(np.asarray(encoder.encode([n for _, n in todo],
                                                   desc="cell type names"), np.float32))
        uterms, inv = np.unique(owner, return_inverse=True)
        if use_markers:
            resolve = human_resolver()
            signs = _term_marker_signs(cl, resolve, list(uterms))
        for (name, norm), q in zip(todo, Q, strict=True):
            sim = E @ q
            best = np.full(len(uterms), -np.inf)
            np.maximum.at(best, inv, sim)  # a term scores as its closest name
            if use_markers:
                stated = _name_markers(norm, resolve)
                if stated:
                    for j, t in enumerate(uterms):
                        own = signs.get(t, {})
                        agree = sum(own.get(g) == s for g, s in stated.items())
                        clash = sum(own.get(g) == -s for g, s in stated.items())
                        best[j] += MARKER_BONUS * (agree - clash)
            for r, j in enumerate(np.argsort(-best, kind="stable")[:n_top], start=1):
                t = str(uterms[j])
                rows.append({"name": name, "rank": r, "term_id": t, "term_name": cl.label[t],
                             "score": float(best[j]), "route": "language model",
                             "normalised": norm})
    order = {n: i for i, n in enumerate(dict.fromkeys(map(str, names)))}
    rows.sort(key=lambda r: (order[r["name"]], r["rank"]))  # input order, then rank
    return pd.DataFrame(rows, columns=["name", "rank", "term_id", "term_name", "score",
                                       "route", "normalised"])
