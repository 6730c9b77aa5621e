"""Species names, NCBI taxonomy IDs, and guessing a dataset's species from its gene names."""

from __future__ import annotations

import re
from collections.abc import Sequence

TAXIDS: dict[str, int] = {"human": 9606, "mouse": 10090}

_SYNONYMS = {
    "human": "human",
    "homo sapiens": "human",
    "homo_sapiens": "human",
    "hsapiens": "human",
    "hs": "human",
    "9606": "human",
    "mouse": "mouse",
    "mus musculus": "mouse",
    "mus_musculus": "mouse",
    "mmusculus": "mouse",
    "mm": "mouse",
    "10090": "mouse",
}

_ENSEMBL_HUMAN = re.compile(r"^ENSG\d{11}(\.\d+)?$")
_ENSEMBL_MOUSE = re.compile(r"^ENSMUSG\d{11}(\.\d+)?$")


def normalize_species(species: str) -> str:
    """Return ``"human"`` or ``"mouse"`` for common spellings (``"Homo sapiens"``, ``9606``...).

    Other names are returned lower-cased unchanged, so tables of further species still work.
    """
    key = str(species).strip().lower()
    return _SYNONYMS.get(key, key)


def taxid(species: str) -> int:
    """NCBI taxonomy ID of ``species`` (a name from :data:`TAXIDS` or a numeric ID)."""
    sp = normalize_species(species)
    if sp in TAXIDS:
        return TAXIDS[sp]
    if sp.isdigit():
        return int(sp)
    raise ValueError(
        f"Unknown species {species!r}: use one of {sorted(TAXIDS)} or an NCBI taxonomy ID "
        "(e.g. '10116' for rat)."
    )


def infer_species(genes: Sequence[str], *, min_share: float = 0.75) -> str:
    """Guess the species of a dataset from its gene identifiers.

    Ensembl IDs decide directly (``ENSG...`` human, ``ENSMUSG...`` mouse). Otherwise upper-case
    symbols (``CD3E``) vote human and capitalised symbols (``Cd3e``, ``mt-Nd1``) vote mouse.

    Parameters
    ----------
    genes
        Gene identifiers, e.g. ``adata.var_names``.
    min_share
        Share of the votes the winning species needs.

    Returns
    -------
    ``"human"`` or ``"mouse"``.
    """
    genes = [str(g) for g in genes]
    if not genes:
        raise ValueError("Cannot infer the species from an empty gene list; pass species=.")
    n_hs = sum(bool(_ENSEMBL_HUMAN.match(g)) for g in genes)
    n_mm = sum(bool(_ENSEMBL_MOUSE.match(g)) for g in genes)
    if n_hs + n_mm >= 0.5 * len(genes):
        return "human" if n_hs >= n_mm else "mouse"

    upper = lower = 0
    for g in genes:
        letters = [c for c in g if c.isalpha()]
        if len(letters) < 2:
            continue
        if g.startswith("mt-"):
            lower += 1
        elif all(c.isupper() for c in letters):
            upper += 1
        elif letters[0].isupper() and any(c.islower() for c in letters[1:]):
            lower += 1
    votes = upper + lower
    if votes:
        if upper / votes >= min_share:
            return "human"
        if lower / votes >= min_share:
            return "mouse"
    raise ValueError(
        f"Could not infer the species from the gene names ({upper} upper-case symbols like "
        f"'CD3E', {lower} capitalised like 'Cd3e', of {len(genes)} genes; examples: "
        f"{genes[:5]}). Pass species='human' or species='mouse'."
    )
