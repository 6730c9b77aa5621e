"""Gene knowledge: sources of gene texts and matching of genes to them."""
