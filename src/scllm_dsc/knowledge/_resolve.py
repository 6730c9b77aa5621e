"""Turn the user's ``knowledge=`` argument into a :class:`KnowledgeSource`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ._base import KnowledgeSource
from ._ncbi import NCBIKnowledge
from ._species import normalize_species
from ._table import DictKnowledge, TableKnowledge


def _how_to(species: str) -> str:
    return (
        f"Point to a gene text table (TSV/CSV with columns 'symbol' and 'text', e.g. the "
        f"project's '{species}_gene_text.tsv.gz') with knowledge='path/to/table' or a folder "
        f"holding it, set the environment variable SCLLM_DSC_DATA (or sd.settings.knowledge_dir) "
        f"to that folder, pass your own texts as a dict {{symbol: text}}, or fetch from NCBI Gene "
        f"with knowledge='ncbi' (needs internet)."
    )


def _need_species(species: str | None, what: str) -> str:
    if species is None:
        raise ValueError(
            f"{what} needs the species: pass species='human' or species='mouse' "
            "(sd.knowledge.infer_species(adata.var_names) can guess it)."
        )
    return normalize_species(species)


def _table_in(folder: Path, species: str | None, origin: str) -> TableKnowledge:
    species = _need_species(species, f"Finding the gene text table in {str(folder)!r}")
    path = folder / f"{species}_gene_text.tsv.gz"
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*_gene_text*")) if folder.is_dir() else []
        found = f" The folder holds {present}." if present else ""
        raise FileNotFoundError(
            f"No gene text table for species {species!r}: {str(path)!r} does not exist "
            f"({origin}).{found} {_how_to(species)}"
        )
    return TableKnowledge(path, species=species)


def get_knowledge(
    knowledge: KnowledgeSource | Mapping[str, str] | str | os.PathLike | None = None,
    species: str | None = None,
) -> KnowledgeSource:
    """Resolve a ``knowledge=`` argument to a :class:`KnowledgeSource`.

    Parameters
    ----------
    knowledge
        - ``None``: the table ``{species}_gene_text.tsv.gz`` in
          :attr:`~scllm_dsc.settings.knowledge_dir`: the env ``SCLLM_DSC_DATA`` when set,
          else the human and mouse tables shipped with the package;
        - a path to a table file (:class:`TableKnowledge`), or to a folder holding
          ``{species}_gene_text.tsv.gz``;
        - ``"ncbi"``: fetch from NCBI Gene (:class:`NCBIKnowledge`, cached on disk);
        - a mapping ``{symbol: text}`` (:class:`DictKnowledge`);
        - a :class:`KnowledgeSource`, returned as it is.
    species
        ``"human"`` or ``"mouse"``; needed to find a table in a folder and for NCBI.

    Returns
    -------
    The knowledge source.
    """
    if isinstance(knowledge, KnowledgeSource):
        if species is not None and knowledge.species is not None:
            if normalize_species(species) != knowledge.species:
                from scanpy import logging as logg

                logg.warning(
                    f"the knowledge source is for {knowledge.species!r} genes but species="
                    f"{species!r} was given; using the source as it is"
                )
        return knowledge
    if isinstance(knowledge, Mapping):
        return DictKnowledge(knowledge, species=species)
    if knowledge is None:
        from .._settings import settings

        if settings._knowledge_dir is not None:
            origin = "settings.knowledge_dir"
        elif os.environ.get("SCLLM_DSC_DATA"):
            origin = "SCLLM_DSC_DATA"
        else:
            origin = "the tables shipped with the package"
        return _table_in(settings.knowledge_dir, species, f"the default folder, from {origin}")
    if isinstance(knowledge, str) and knowledge.strip().lower() == "ncbi":
        return NCBIKnowledge(species=_need_species(species, "knowledge='ncbi'"))
    if isinstance(knowledge, str | os.PathLike):
        path = Path(knowledge).expanduser()
        if path.is_dir():
            return _table_in(path, species, "the folder given as knowledge=")
        if path.is_file():
            return TableKnowledge(path, species=species)
        raise FileNotFoundError(
            f"knowledge={str(knowledge)!r} is neither an existing file or folder nor 'ncbi'. "
            f"{_how_to(normalize_species(species) if species else 'human')}"
        )
    raise TypeError(
        f"knowledge must be None, a path, 'ncbi', a dict {{symbol: text}} or a KnowledgeSource, "
        f"not {type(knowledge).__name__}."
    )
