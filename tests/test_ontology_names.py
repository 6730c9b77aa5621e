"""Free-text cell type names to Cell Ontology terms (rules, language model, markers)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cellxgene_ontology_guide")

from scllm_dsc.knowledge import match_cell_types  # noqa: E402
from scllm_dsc.knowledge._ontology_names import normalise_cell_name  # noqa: E402


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CD14+ Monocytes", "cd14-positive monocyte"),
        ("CD4+/CD45RA+/CD25- Naive T", "cd4-positive cd45ra-positive cd25-negative naive t cell"),
        ("NK cells", "nk cell"),
        ("interneurons", "interneuron"),
        ("t_cell", "t cell"),
        ("B cells", "b cell"),
        ("alpha", "alpha cell"),
        ("pyramidal CA1", "pyramidal ca1 cell"),
        ("erythroblasts", "erythroblast"),
    ],
)
def test_normalise_cell_name(name, expected):
    assert normalise_cell_name(name) == expected


class _Letters:
    """A stand-in encoder: bag of letter trigrams (no model needed)."""

    def encode(self, texts, desc=None):
        out = np.zeros((len(texts), 4096), dtype=np.float32)
        for i, t in enumerate(texts):
            t = f"  {t.lower()} "
            for j in range(len(t) - 2):
                out[i, hash(t[j : j + 3]) % 4096] += 1
        return out


def test_lookup_routes_and_marker_agreement():
    names = ["B cells", "CD14+ Monocytes", "natural killer cell", "CD8+ cytotoxic T"]
    df = match_cell_types(names, encoder=_Letters(), use_markers=True)
    top = df[df["rank"] == 1].set_index("name")
    assert top.loc["natural killer cell", "route"] == "label"
    assert top.loc["natural killer cell", "term_id"] == "CL:0000623"
    assert top.loc["B cells", "route"] == "normalised label"
    assert top.loc["B cells", "term_id"] == "CL:0000236"
    assert top.loc["CD14+ Monocytes", "term_id"] == "CL:0001054"
    # not a label: ranked by the encoder; the CD8 it states must agree with the term's
    cd8 = df[df["name"] == "CD8+ cytotoxic T"]
    assert set(cd8["route"]) == {"language model"} and len(cd8) == 3
    assert "CD8" in cd8.iloc[0]["term_name"]
    assert list(df["name"].drop_duplicates()) == names  # input order kept


def test_without_model_unmatched_names_get_no_term():
    df = match_cell_types(["mystery blob"], use_model=False)
    assert df.loc[0, "route"] == "none" and df.loc[0, "term_id"] == ""
    with pytest.raises(ValueError, match="current Cell Ontology"):
        match_cell_types(["x"], terms=["CL:not-a-term"])
    with pytest.raises(TypeError, match=r"pass \['B cells'\]"):
        match_cell_types("B cells")  # one string would be matched letter by letter
