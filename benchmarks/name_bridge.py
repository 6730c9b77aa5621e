"""Free-text cell type names to Cell Ontology terms: rules, language model, marker agreement.

The names are the datasets' own ``cell_type`` labels that have a curated Cell Ontology term
in ``cell_ontology_map.csv`` (the reference). Each variant of
:func:`scllm_dsc.knowledge.match_cell_types` ranks the candidate terms
(all current CL terms, or the dataset's tissue preset as in ``annotation.py``):

- ``lookup``: the name as written, matched to CL labels and exact synonyms;
- ``rules``: the name rewritten in the ontology's style, then looked up;
- ``rules + LM``: names still unmatched ranked by all-MiniLM-L6-v2 cosine to the terms'
  labels and synonyms (the default);
- ``rules + LM + markers``: plus the markers the name states (``CD8+``) agreeing with those
  the term states (``use_markers=True``);
- ``rules + random vectors``: the control, the same with Gaussian random vectors in place of
  the model's (one fixed vector per text).

Accuracy over names: top-1 and top-3 exact, and near (the reference or up to two is_a steps
above or below it). Only names, no expression data, are used.

Usage::

    python benchmarks/name_bridge.py
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS  # noqa: E402
from annotation import PRESET, TUNED_ON, hits  # noqa: E402

HERE = Path(__file__).resolve().parent


class RandomEncoder:
    """One fixed Gaussian vector per text (seeded by the text's hash): the control."""

    def __init__(self, dim: int = 384):
        self.dim = dim

    def encode(self, texts, desc=None):
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.dim)
        return out


def main() -> None:
    from scllm_dsc.encoders import get_encoder
    from scllm_dsc.knowledge import match_cell_types
    from scllm_dsc.knowledge._cell_markers import cell_ontology
    from scllm_dsc.tl._candidates import ontology_candidates

    cl = cell_ontology()
    ref = pd.read_csv(HERE / "cell_ontology_map.csv").dropna(subset=["term_id"])
    ref = ref[ref.dataset.isin(PRESET)]
    lm = get_encoder()
    variants = {
        "lookup": {"use_model": False, "rewrite": False},
        "rules": {"use_model": False},
        "rules + LM": {"encoder": lm},
        "rules + LM + markers": {"encoder": lm, "use_markers": True},
        "rules + random vectors": {"encoder": RandomEncoder()},
    }
    rows = []
    for candidates in ("all CL terms", "tissue preset"):
        for ds, df in ref.groupby("dataset"):
            terms = (None if candidates == "all CL terms"
                     else ontology_candidates(PRESET[ds])["term_id"].tolist())
            for variant, kw in variants.items():
                kw = dict(kw)
                names = df.label.tolist()
                if not kw.pop("rewrite", True):
                    # as written: only an exact label/synonym (the rewrite is part of the
                    # lookup, so emulate it by keeping names that match as written)
                    found = match_cell_types(names, terms, use_model=False)
                    found = found[found.route == "label"]
                else:
                    found = match_cell_types(names, terms, **kw)
                for label, t_ref in zip(df.label, df.term_id, strict=True):
                    ranked = found[found.name == label].sort_values("rank")
                    ranked = [t for t in ranked.term_id if t]
                    route = (found[found.name == label].route.iloc[0]
                             if (found.name == label).any() else "none")
                    rows.append({"candidates": candidates, "variant": variant, "dataset": ds,
                                 "label": label, "reference": t_ref,
                                 "top1": ranked[0] if ranked else "",
                                 "top1_name": cl.label.get(ranked[0], "") if ranked else "",
                                 "route": route, "tuned_on": ds in TUNED_ON,
                                 **hits(ranked, t_ref, cl)})
    res = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True, parents=True)
    res.to_csv(RESULTS / "name_bridge.csv", index=False)
    cols = ["top1_exact", "top1_near", "top3_exact", "top3_near"]
    table = res.groupby(["candidates", "variant"], sort=False)[cols].mean().round(2)
    untuned = (res[~res.tuned_on].groupby(["candidates", "variant"], sort=False)[cols[:2]]
               .mean().round(2).add_suffix(" (untuned)"))
    table = table.join(untuned).reset_index()
    n = res.groupby(["candidates", "variant"]).size().iloc[0]
    md = (f"# Cell type names to Cell Ontology terms ({n} curated names, 6 datasets)\n\n"
          "Command: `python benchmarks/name_bridge.py`. Rules written looking at the names of "
          f"{', '.join(TUNED_ON)}; the `(untuned)` columns average the other datasets' names."
          "\n\n" + table.to_markdown(index=False) + "\n")
    (RESULTS / "name_bridge.md").write_text(md)
    print(md)
    wrong = res[(res.variant == "rules + LM + markers") & ~res.top1_exact]
    print(wrong[["candidates", "dataset", "label", "top1_name", "route"]].to_string())


if __name__ == "__main__":
    main()
