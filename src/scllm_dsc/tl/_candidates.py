"""Candidate cell types for cluster annotation: Cell Ontology terms or a user's own list."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pandas as pd

INSTALL_HINT = 'pip install "scllm-dsc[ontology]"'

# Generic cell types found in most tissues (vessels, stroma, resident immune cells); added
# to the tissue presets so a stromal or immune cluster has a fitting name to get.
_COMMON = (
    "CL:0000115",  # endothelial cell
    "CL:0000057",  # fibroblast
    "CL:0000669",  # pericyte
    "CL:0000192",  # smooth muscle cell
    "CL:0000235",  # macrophage
    "CL:0000097",  # mast cell
    "CL:0000084",  # T cell
    "CL:0000236",  # B cell
    "CL:0000623",  # natural killer cell
    "CL:0000451",  # dendritic cell
    "CL:0000576",  # monocyte
    "CL:0000775",  # neutrophil
    "CL:0000786",  # plasma cell
    "CL:0000232",  # erythrocyte
)

#: Named subsets of the Cell Ontology: ``"subtrees"`` are taken with all their descendants,
#: ``"terms"`` alone; ``"exclude"`` subtrees, and terms whose label matches ``"not_words"``
#: (a regular expression, case-insensitive, matched at word starts), are left out.
PRESETS: dict[str, dict] = {
    "immune": {"subtrees": ("CL:0000988",), "terms": ()},  # hematopoietic cell
    "blood": {"subtrees": ("CL:0000988",), "terms": ()},
    "pancreas": {
        "subtrees": (
            "CL:0000083",  # epithelial cell of pancreas (endocrine, acinar, ductal)
            "CL:0002574",  # stromal cell of pancreas
            "CL:0002410",  # pancreatic stellate cell
            "CL:0002351",  # progenitor cell of endocrine pancreas
            "CL:0002573",  # Schwann cell
        ),
        "terms": _COMMON,
    },
    "brain": {
        "subtrees": (
            "CL:0002319",  # neural cell (neurons and glia)
        ),
        "terms": _COMMON,
        # the eye and the peripheral nervous system are not brain (the ontology's is_a
        # hierarchy files retinal neurons and ganglia under "neuron" alone)
        "exclude": (
            "CL:0009004",  # retinal cell
            "CL:0000006",  # neuronal receptor cell (photoreceptors, hair cells...)
            "CL:0000101",  # sensory neuron
            "CL:0000107",  # autonomic neuron
        ),
        "not_words": r"retina|amacrine|bipolar cell|ganglion cell|enteric|myenteric|"
                     r"dorsal root|cervical ganglion|spinal|lateral line",
    },
}

# Terms too general to be a useful name for a cluster.
_TOO_GENERAL = {
    "CL:0000000",  # cell
    "CL:0000003",  # native cell
    "CL:0000255",  # eukaryotic cell
    "CL:0000548",  # animal cell
    "CL:0002371",  # somatic cell
    "CL:0002242",  # nucleate cell
    "CL:0000010",  # cultured cell
}


def ontology_parser():
    """The Cell Ontology parser of ``cellxgene-ontology-guide`` (offline), or a clear error."""
    try:
        from cellxgene_ontology_guide.ontology_parser import OntologyParser
    except ImportError as err:
        raise ImportError(
            "Cell Ontology candidates need the optional package `cellxgene-ontology-guide`: "
            f"run `{INSTALL_HINT}`, or pass your own `candidates=` (a list of names or a "
            "dict of name -> description)."
        ) from err
    return _cached_parser(OntologyParser)


_PARSER = {}


def _cached_parser(cls):
    if "cl" not in _PARSER:
        _PARSER["cl"] = cls()
    return _PARSER["cl"]


def candidate_text(label: str, synonyms: Sequence[str] = (), definition: str | None = None) -> str:
    """The text embedded for a candidate: label, synonyms and definition."""
    text = label.strip()
    syn = [s for s in dict.fromkeys(synonyms) if s and s.lower() != label.lower()]
    if syn:
        text += " (also: " + "; ".join(syn) + ")"
    if definition:
        text += ". " + definition.strip()
    return text


def _term_row(parser, term_id: str) -> dict:
    label = parser.get_term_label(term_id)
    return {
        "name": label,
        "term_id": term_id,
        "text": candidate_text(
            label, parser.get_term_synonyms(term_id), parser.get_term_description(term_id)
        ),
    }


def _resolve_term(parser, term: str, label_map: dict[str, str]) -> str:
    """A CL id from an id or a (case-insensitive) label."""
    t = term.strip()
    if t.upper().startswith("CL:"):
        t = t.upper()
        if not parser.is_valid_term_id(t):
            raise ValueError(f"{term!r} is not a Cell Ontology term id.")
        return t
    lower = {k.lower(): v for k, v in label_map.items()}
    if t.lower() in lower:
        return lower[t.lower()]
    raise ValueError(
        f"{term!r} is neither a preset ({', '.join(sorted(PRESETS))}), a Cell Ontology id "
        "(e.g. 'CL:0000988') nor a Cell Ontology label (e.g. 'hematopoietic cell')."
    )


def ontology_candidates(within: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Cell Ontology terms as candidates (``name``, ``term_id``, ``text``).

    ``within`` picks a subset: a preset name (:data:`PRESETS`), a CL id or label (the term
    and all its descendants), or a list of these (their union). ``None`` takes every
    current Cell Ontology term except a few that are too general to name a cluster.
    Obsolete terms are always left out.
    """
    parser = ontology_parser()
    label_map = parser.get_term_label_to_id_map("CL")
    if within is None:
        ids = set(label_map.values())
    else:
        items = [within] if isinstance(within, str) else list(within)
        ids = set()
        for item in items:
            key = item.strip().lower() if isinstance(item, str) else item
            if key in PRESETS:
                preset = PRESETS[key]
                sel = set(preset["terms"])
                for root in preset["subtrees"]:
                    sel.update(parser.get_term_descendants(root, include_self=True))
                for root in preset.get("exclude", ()):
                    sel.difference_update(parser.get_term_descendants(root, include_self=True))
                if preset.get("not_words"):
                    rx = re.compile(r"\b(?:" + preset["not_words"] + ")", re.IGNORECASE)
                    sel = {i for i in sel if not rx.search(parser.get_term_label(i) or "")}
                ids.update(sel)
            else:
                root = _resolve_term(parser, item, label_map)
                ids.update(parser.get_term_descendants(root, include_self=True))
    ids = sorted(
        i for i in ids if i.startswith("CL:") and i not in _TOO_GENERAL
        and not parser.is_term_deprecated(i)
    )
    if not ids:
        raise ValueError(f"No current Cell Ontology terms within {within!r}.")
    return pd.DataFrame([_term_row(parser, i) for i in ids])


def user_candidates(candidates: Sequence[str] | Mapping[str, str]) -> pd.DataFrame:
    """A user's candidates as a table (``name``, ``term_id``, ``text``).

    A dict maps names to descriptions (embedded as ``"name. description"``). In a list, a
    name that is a Cell Ontology id or label (or exact synonym) gets the term's synonyms and
    definition when ``cellxgene-ontology-guide`` is installed; other names are embedded as
    they are.
    """
    if isinstance(candidates, str):
        raise TypeError(
            "`candidates` is a list of names or a dict of name -> description; to pick "
            "Cell Ontology terms by a preset, id or label, use `within=`."
        )
    if isinstance(candidates, Mapping):
        rows = [
            {"name": str(k), "term_id": "", "text": f"{k}. {v}".strip() if v else str(k)}
            for k, v in candidates.items()
        ]
    else:
        names = [str(c) for c in candidates]
        try:
            parser = ontology_parser()
        except ImportError:
            parser = None
        lookup: dict[str, str] = {}
        if parser is not None:
            label_map = parser.get_term_label_to_id_map("CL")
            lookup = {k.lower(): v for k, v in label_map.items()}
        rows = []
        for name in names:
            tid = None
            if parser is not None:
                if name.upper().startswith("CL:") and parser.is_valid_term_id(name.upper()):
                    tid = name.upper()
                else:
                    tid = lookup.get(name.lower())
            if tid is not None:
                row = _term_row(parser, tid)
                if not name.upper().startswith("CL:"):
                    row["name"] = name
                rows.append(row)
            else:
                rows.append({"name": name, "term_id": "", "text": name})
    df = pd.DataFrame(rows, columns=["name", "term_id", "text"])
    if len(df) < 2:
        raise ValueError("Give at least two candidates to rank.")
    dup = df["name"][df["name"].duplicated()].unique()
    if len(dup):
        raise ValueError(f"Candidate names must be unique; repeated: {list(dup)[:5]}.")
    return df
