"""Gene knowledge: sources of gene texts and matching of genes to them.

A :class:`KnowledgeSource` gives the text of each gene (e.g. its NCBI Gene description);
:func:`get_knowledge` turns a user's ``knowledge=`` argument into one, and
:func:`match_genes` maps a dataset's gene names (symbols, aliases, Ensembl IDs) onto it.
:func:`match_cell_types` maps free-text cell type names onto Cell Ontology terms.
"""

from ._base import KnowledgeSource, build_gene_text
from ._match import GeneMatch, match_genes
from ._ncbi import NCBIKnowledge
from ._ontology_names import match_cell_types
from ._resolve import get_knowledge
from ._species import TAXIDS, infer_species, normalize_species
from ._table import DictKnowledge, TableKnowledge

__all__ = [
    "KnowledgeSource",
    "TableKnowledge",
    "DictKnowledge",
    "NCBIKnowledge",
    "get_knowledge",
    "infer_species",
    "normalize_species",
    "match_genes",
    "match_cell_types",
    "GeneMatch",
    "build_gene_text",
    "TAXIDS",
]
