"""Table and dict knowledge sources, gene matching and species inference on real data."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
from conftest import DATASETS

from scllm_dsc import settings
from scllm_dsc.knowledge import (
    DictKnowledge,
    GeneMatch,
    KnowledgeSource,
    NCBIKnowledge,
    TableKnowledge,
    _table,
    get_knowledge,
    infer_species,
    match_genes,
)


@pytest.fixture(scope="module")
def human(human_table) -> TableKnowledge:
    k = TableKnowledge(human_table)
    k.symbols()  # parse once for the module
    return k


@pytest.fixture(scope="module")
def mouse(mouse_table) -> TableKnowledge:
    return TableKnowledge(mouse_table)


def _var_names(name: str):
    import anndata as ad

    path = DATASETS / f"{name}.h5ad"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return list(ad.read_h5ad(path, backed="r").var_names)


# -- tables ----------------------------------------------------------------------------------
@pytest.mark.shared
def test_human_table_finds_its_siblings(human, genetext_dir):
    assert human.species == "human"
    assert human.name == str(genetext_dir / "human_gene_text.tsv.gz")
    assert human.alias_path == genetext_dir / "human_alias_to_symbol.tsv.gz"
    assert human.ensembl_path == genetext_dir / "human_ensembl_to_symbol.tsv.gz"
    assert len(human.symbols()) == 77510
    t = human.texts(["CD3E", "A1BG", "NOT_A_GENE"])
    assert set(t) == {"CD3E", "A1BG"}
    assert t["A1BG"].startswith("A1BG: alpha-1-B glycoprotein. The protein encoded")
    # ambiguous aliases (A1B -> A1BG or SNTB1) are skipped, unambiguous kept
    assert human.aliases()["ABG"] == "A1BG"
    assert "A1B" not in human.aliases()
    assert human.ensembl()["ENSG00000121410"] == "A1BG"


@pytest.mark.shared
def test_human_matching_routes(human):
    genes = [
        "CD3E",  # symbol
        "PNRC2.1",  # R make.unique suffix
        "SRSF10.1",
        "ALMS1.IT1",  # R make.names turned ALMS1-IT1 into ALMS1.IT1
        "cd3e",  # unique case-insensitive
        "ABG",  # alias of A1BG
        "A1B",  # ambiguous alias: no match
        "ENSG00000121410.15",  # versioned Ensembl ID
        "ENSG00000121410",
        "NOT_A_GENE",
    ]
    m = match_genes(genes, human)
    assert isinstance(m, GeneMatch)
    assert m.symbols == [
        "CD3E", "PNRC2", "SRSF10", "ALMS1-IT1", "CD3E", "A1BG", None, "A1BG", "A1BG", None,
    ]
    assert list(m.matched_by) == [
        "symbol", "symbol", "symbol", "symbol", "symbol", "alias", "", "ensembl", "ensembl", "",
    ]
    assert m.found.tolist() == [s is not None for s in m.symbols]
    assert m.texts[6] is None and m.texts[5] == m.texts[7] == human.texts(["A1BG"])["A1BG"]
    assert m.summary() == {
        "n_genes": 10, "symbol": 5, "alias": 1, "ensembl": 2, "unmatched": 2, "coverage": 0.8,
    }
    df = m.to_df()
    assert list(df.index) == genes and df.loc["ABG", "symbol"] == "A1BG"


@pytest.mark.shared
def test_ensembl_ids_column(human):
    m = match_genes(["mystery", "CD3E", "other"], human, ensembl_ids=["ENSG00000121410.3", None,
                                                                      np.nan])
    assert m.symbols == ["A1BG", "CD3E", None]
    assert list(m.matched_by) == ["ensembl", "symbol", ""]
    with pytest.raises(ValueError, match="one Ensembl ID"):
        match_genes(["a", "b"], human, ensembl_ids=["ENSG00000121410"])


@pytest.mark.shared
def test_zheng_coverage(human):
    genes = _var_names("Zheng_sortedPBMC_2140")
    m = match_genes(genes, human)
    s = m.summary()
    print("Zheng_sortedPBMC_2140", s)
    assert m.coverage >= 0.9
    assert s["alias"] > 0 and s["n_genes"] == len(genes) == 8863
    assert m.symbols[genes.index("PNRC2.1")] == "PNRC2"


@pytest.mark.shared
def test_cellbench_ensembl_names(human):
    m = match_genes(_var_names("CellBench_CELseq2_5cl"), human)
    assert m.summary()["ensembl"] > 100 and m.coverage >= 0.9


@pytest.mark.shared
def test_mouse_table_is_case_aware(mouse):
    assert mouse.species == "mouse" and mouse.aliases() == {} and mouse.ensembl() == {}
    m = match_genes(["Cd3e", "CD3E", "cd3e", "T", "t", "Gapdh.1", "NotAGene"], mouse)
    # "T" and "t" are two mouse genes: exact matches only, never case-folded into each other
    assert m.symbols == ["Cd3e", "Cd3e", "Cd3e", "T", "t", "Gapdh", None]
    genes = _var_names("Pancreas_endocrinogenesis_739")
    cov = match_genes(genes, mouse).coverage
    print("Pancreas_endocrinogenesis_739 coverage", cov)
    assert cov >= 0.9


def test_case_insensitive_only_if_unique():
    k = DictKnowledge({"Abc1": "Abc1: one.", "ABC1": "ABC1: two.", "Xyz": "Xyz: three."})
    m = match_genes(["abc1", "ABC1", "XYZ", "xyz", "Abc1"], k)
    assert m.symbols == [None, "ABC1", "Xyz", "Xyz", "Abc1"]


def test_missing_columns_error(tmp_path):
    p = tmp_path / "genes.tsv"
    p.write_text("gene\tdescription\nCD3E\tT cell thing\n")
    k = TableKnowledge(p)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['symbol', 'text'\]") as err:
        k.texts(["CD3E"])
    assert "'gene', 'description'" in str(err.value) and "TSV or CSV" in str(err.value)
    with pytest.raises(FileNotFoundError, match="symbol"):
        TableKnowledge(tmp_path / "absent.tsv.gz")


def test_csv_and_plain_tsv(tmp_path):
    csv = tmp_path / "my_genes.csv"
    csv.write_text(
        'symbol,text,extra\nCD3E,"CD3E: T cell, receptor.",1\nNA,"NA: a gene named NA.",2\n'
    )
    k = TableKnowledge(csv, species="Homo sapiens")
    assert k.species == "human" and k.name == str(csv)
    assert k.texts(["CD3E", "NA"]) == {
        "CD3E": "CD3E: T cell, receptor.",
        "NA": "NA: a gene named NA.",
    }
    assert k.aliases() == {}  # no sibling alias table in tmp_path

    tsv = tmp_path / "mouse_gene_text.txt"
    tsv.write_text("text\tsymbol\nCd3e: mouse.\tCd3e\n\tEmpty\n")
    k2 = TableKnowledge(tsv)
    assert k2.species == "mouse" and k2.symbols() == {"Cd3e"}  # empty texts dropped

    gz = tmp_path / "rat_gene_text.tsv.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("symbol\ttext\nCd3e\tCd3e: rat.\n")
    (tmp_path / "rat_alias_to_symbol.tsv.gz").write_bytes(
        gzip.compress(b"alias\tsymbol\tambiguous\nT3e\tCd3e\tFalse\nX\tCd3e\tTrue\nY\tCd3e\tFalse\n"
                      b"Y\tOther\tFalse\n")
    )
    (tmp_path / "rat_ensembl_to_symbol.tsv.gz").write_bytes(
        gzip.compress(b"ensembl_id\tsymbol\nENSRNOG00000000001.2\tCd3e\n")
    )
    k3 = TableKnowledge(gz)
    assert k3.species == "rat"
    assert dict(k3.aliases()) == {"T3e": "Cd3e"}  # X ambiguous, Y points to two symbols
    m = match_genes(["T3e", "ENSRNOG00000000001", "X"], k3)
    assert list(m.matched_by) == ["alias", "ensembl", ""]
    k4 = TableKnowledge(gz, alias_table=None, ensembl_table=None)
    assert k4.aliases() == {} and k4.ensembl() == {}


@pytest.mark.shared
def test_tables_parsed_once_per_path_and_mtime(tmp_path, human_table):
    p = tmp_path / "human_gene_text.tsv"
    p.write_text("symbol\ttext\nCD3E\tv1\n")
    assert TableKnowledge(p).texts(["CD3E"]) == {"CD3E": "v1"}
    n = len(_table._TABLE_CACHE)
    assert TableKnowledge(p).texts(["CD3E"]) == {"CD3E": "v1"}
    assert len(_table._TABLE_CACHE) == n  # second source reuses the parsed table
    p.write_text("symbol\ttext\nCD3E\tversion 2\n")
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    assert TableKnowledge(p).texts(["CD3E"]) == {"CD3E": "version 2"}
    # the big shared table: another instance does not parse it again
    before = len(_table._TABLE_CACHE)
    TableKnowledge(human_table).symbols()
    assert len(_table._TABLE_CACHE) == before


def test_dict_knowledge():
    k = DictKnowledge({"CD3E": "CD3E: T cells.", "MS4A1": "MS4A1: B cells.", "EMPTY": " "},
                      species="human")
    assert isinstance(k, KnowledgeSource) and k.name == "dict" and k.species == "human"
    assert k.symbols() == {"CD3E", "MS4A1"}
    assert k.texts(["MS4A1", "CD3E", "CD3E", "X"]) == {"MS4A1": "MS4A1: B cells.",
                                                       "CD3E": "CD3E: T cells."}
    m = match_genes(["CD3E", "ms4a1", "EMPTY"], k)
    assert m.symbols == ["CD3E", "MS4A1", None] and m.coverage == pytest.approx(2 / 3)
    with pytest.raises(TypeError, match="strings"):
        DictKnowledge({"CD3E": 1.0})
    assert match_genes([], k).coverage == 0.0


# -- get_knowledge ----------------------------------------------------------------------------
@pytest.mark.shared
def test_get_knowledge_resolution(genetext_dir, human_table, monkeypatch, tmp_path):
    assert isinstance(get_knowledge(human_table), TableKnowledge)
    assert get_knowledge(str(genetext_dir), species="mouse").path.name == "mouse_gene_text.tsv.gz"
    d = get_knowledge({"A": "A: a."})
    assert isinstance(d, DictKnowledge)
    assert get_knowledge(d) is d
    assert isinstance(get_knowledge("NCBI", species="human"), NCBIKnowledge)
    # default: settings.knowledge_dir, which follows SCLLM_DSC_DATA
    monkeypatch.setattr(settings, "_knowledge_dir", None)
    monkeypatch.setenv("SCLLM_DSC_DATA", str(genetext_dir))
    k = get_knowledge(species="human")
    assert isinstance(k, TableKnowledge) and k.path == human_table
    monkeypatch.setattr(settings, "_knowledge_dir", tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        get_knowledge(species="human")
    msg = str(err.value)
    assert "human_gene_text.tsv.gz" in msg and "SCLLM_DSC_DATA" in msg
    assert "knowledge='ncbi'" in msg and "knowledge=" in msg
    with pytest.raises(ValueError, match="species"):
        get_knowledge(str(genetext_dir))
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        get_knowledge(tmp_path / "nope.tsv")
    with pytest.raises(TypeError, match="knowledge must be"):
        get_knowledge(42)


# -- species ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "species"),
    [
        ("Zheng_sortedPBMC_2140", "human"),
        ("Baron_human_subset", "human"),
        ("Kang_ctrl_PBMC_8684", "human"),
        ("CellBench_CELseq2_5cl", "human"),
        ("PBMC68k_reduced_700", "human"),
        ("Pancreas_endocrinogenesis_739", "mouse"),
        ("Zeisel_subset_1464", "mouse"),
    ],
)
@pytest.mark.shared
def test_infer_species_on_datasets(name, species, shared_datasets):
    assert infer_species(_var_names(name)) == species


def test_infer_species_edge_cases():
    assert infer_species(["ENSG00000121410.15", "ENSG00000175899", "CD3E"]) == "human"
    assert infer_species(["ENSMUSG00000032093", "ENSMUSG00000000001.4"]) == "mouse"
    assert infer_species(["mt-Nd1", "Cd3e", "Gapdh", "Actb"]) == "mouse"
    with pytest.raises(ValueError, match="species='human'"):
        infer_species(["CD3E", "Cd3e", "GAPDH", "Actb"])
    with pytest.raises(ValueError, match="empty"):
        infer_species([])
    with pytest.raises(ValueError, match="Could not infer"):
        infer_species(["1", "2"])


# -- the knowledge shipped in the package ------------------------------------------------------
def test_default_knowledge_is_shipped(monkeypatch, tmp_path):
    """No env var, no settings, no ../shared: the packaged tables answer."""
    from scllm_dsc._settings import bundled_knowledge_dir

    monkeypatch.delenv("SCLLM_DSC_DATA", raising=False)
    monkeypatch.setattr(settings, "_knowledge_dir", None)
    folder = bundled_knowledge_dir()
    assert folder.parent.name == "knowledge" and "shared" not in folder.parts
    assert settings.knowledge_dir == folder
    human = get_knowledge(species="human")
    assert isinstance(human, TableKnowledge) and human.path == folder / "human_gene_text.tsv.gz"
    assert human.texts(["CD3E"])["CD3E"].startswith("CD3E: CD3 epsilon")
    assert len(human) > 70_000 and human.aliases() and human.ensembl()
    m = match_genes(["CD3E", "T3E", "ENSG00000198851.3"], human)
    assert m.symbols == ["CD3E", "CD3E", "CD3E"]
    mouse = get_knowledge(species="mouse")
    assert mouse.path == folder / "mouse_gene_text.tsv.gz"
    assert "Cd3e" in mouse.texts(["Cd3e"])
    # overrides still win: the env var, then settings.knowledge_dir, then knowledge=
    (tmp_path / "env").mkdir()
    table = tmp_path / "env" / "human_gene_text.tsv.gz"
    import pandas as pd

    pd.DataFrame({"symbol": ["CD3E"], "text": ["CD3E: mine."]}).to_csv(table, sep="\t",
                                                                        index=False)
    monkeypatch.setenv("SCLLM_DSC_DATA", str(tmp_path / "env"))
    assert get_knowledge(species="human").texts(["CD3E"]) == {"CD3E": "CD3E: mine."}
    monkeypatch.setattr(settings, "_knowledge_dir", tmp_path)
    with pytest.raises(FileNotFoundError, match="settings.knowledge_dir"):
        get_knowledge(species="human")
    assert get_knowledge(str(table)).texts(["CD3E"]) == {"CD3E": "CD3E: mine."}


def test_shipped_tables_keep_the_columns_the_code_reads():
    import pandas as pd

    from scllm_dsc._settings import bundled_knowledge_dir

    folder = bundled_knowledge_dir()
    cols = {p.name: list(pd.read_csv(p, sep="\t", nrows=1).columns) for p in folder.glob("*.gz")}
    assert {"symbol", "text", "full_name", "text_source", "gene_type"} <= set(
        cols["human_gene_text.tsv.gz"])
    assert {"symbol", "text", "full_name", "text_source", "human_ortholog"} <= set(
        cols["mouse_gene_text.tsv.gz"])
    assert cols["human_alias_to_symbol.tsv.gz"] == ["alias", "symbol", "ambiguous"]
    assert cols["human_ensembl_to_symbol.tsv.gz"] == ["ensembl_id", "symbol"]
    assert "human_symbol" in cols["human_mouse_orthologs.tsv.gz"]
