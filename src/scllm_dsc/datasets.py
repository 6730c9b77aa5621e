"""Small offline example data."""

from __future__ import annotations

import numpy as np
from scipy import sparse


def pbmc68k_counts():
    """700 PBMCs of scanpy's bundled ``pbmc68k_reduced`` with integer counts.

    scanpy ships these cells log-normalised in ``.raw`` (765 genes). Counts are recovered per
    cell as ``round(expm1(x) / min_nonzero(expm1(x)))``, which is exact up to a per-cell scale
    factor. ``obs["bulk_labels"]`` holds the published (noisy) cell-type labels. Nothing is
    downloaded.

    Returns
    -------
    :class:`~anndata.AnnData` with raw counts in ``X`` (CSR, float32).
    """
    import anndata as ad
    import scanpy as sc

    src = sc.datasets.pbmc68k_reduced()
    logn = sparse.csr_matrix(src.raw.X)
    expd = logn.copy()
    expd.data = np.expm1(expd.data)
    # the smallest non-zero value of each cell is one count
    mins = np.array(
        [row.data.min() if row.nnz else 1.0 for row in expd],  # 700 rows: cheap
        dtype=np.float64,
    )
    counts = sparse.diags(1.0 / mins) @ expd
    counts.data = np.round(counts.data)
    counts = sparse.csr_matrix(counts, dtype=np.float32)
    counts.eliminate_zeros()
    obs = src.obs[["bulk_labels"]].copy()
    return ad.AnnData(X=counts, obs=obs, var=src.raw.var[[]].copy())


# 480 human gene symbols, each with a text in the project's NCBI gene-text table (a RefSeq
# summary; NKG7: Gene Ontology text), marker genes first, then genes of scanpy's
# pbmc68k_reduced: synthetic data meets the same knowledge as real PBMC or pancreas data.
_SYMBOLS = """
    CD3E CD3D CD2 IL7R CCR7 CD8A CD8B MS4A1 CD79A CD79B CD19 CD14 LYZ S100A8 S100A9 FCGR3A NKG7
    GNLY KLRD1 PPBP PF4 INS GCG SST PPY KRT19 PRSS1 CPA1 HBB HBA1 FCER1A CST3 TNFRSF4 PARK7
    RBP7 SRM MAD2L2 AGTRAP TNFRSF1B NECAP2 C1QA C1QB HNRNPR GALE STMN1 FGR SESN2 LCK MARCKSL1
    PSMB2 MEAF6 NDUFS5 CAP1 PRDX1 SCP2 MAGOH JAK1 GBP2 CD53 RHOC TXNIP CD160 APH1A MRPS21 CTSS
    MRPL9 S100A10 S100A6 S100A4 RAB13 TPM3 HAX1 PMVK PBXIP1 DAP3 CCT3 SH2D2A MNDA TAGLN2 LY9
    FCER1G SDHC FCRLA CD247 CREG1 XCL1 PRDX6 TPR PTPRC PTPN7 NUCKS1 TRAF3IP3 NENF CAPN2 COA6
    ARID4B ID2 HPCAL1 RAB10 PPM1G SRSF7 ZFP36L2 ERLEC1 CAPG RNF181 MAL DUSP2 MGAT4A LIMS1 IL1B
    NIFK GYPC CCDC115 CXCR4 SSB WIPF1 ITGA4 HSPD1 CD28 SLC11A1 SP110 SP140 SP100 NCL ARL4C OGG1
    MRPS25 ACAA1 EXOG NDUFAF3 IMPDH2 GPX1 GNAI2 MANF TKT ARL6IP5 CD47 TIGIT COX17 GATA2 RAB7A
    SIAH2 P2RY13 SSR3 SEC62 CCDC50 HES1 CYTL1 MRFAP1 BLOC1S4 BST1 FGFBP2 HOPX SPINK2 IGFBP7
    CCNI HNRNPDL HSD17B11 BANK1 ANXA5 HMGB2 EMB GZMK GZMA NSA2 COX7C GLRX CAMK4 SNX2 IRF1 SKP1
    TXNDC15 EGR1 NDUFA2 NDFIP1 CD74 NPM1 ATP6V0E1 HIGD2A LMAN2 F12 NHP2 SQSTM1 RNF130 SERPINB1
    SERPINB6 DEK SOX4 LTB LST1 AIF1 DDAH2 CLIC1 HLA-DRA HLA-DRB5 HLA-DRB1 HLA-DQA1 HLA-DQB1
    HLA-DQA2 HLA-DMB HLA-DMA HLA-DPA1 HLA-DPB1 HSD17B8 TAPBP DAXX HMGA1 CNPY3 HSP90AB1 ELOVL5
    UBE2J1 CD164 GTF3C6 GOPC DYNLT1 SOD2 TCP1 MRPL18 RNASET2 MAD1L1 CHST12 EIF2AK1 NDUFA4 TOMM7
    CPVL LSM5 AOAH STK17A PPIA SNHG15 UPP1 CCT6A SBDS EIF4H LAT2 NCF1 HSPB1 CDK6 PDAP1 MCM7
    PILRA RINT1 CPA5 MTPN NDUFB2 MRPS33 GSTK1 ZYX GIMAP7 OFD1 NDUFB11 TIMP1 CFP EBP WDR13 PQBP1
    PLP2 MSN IGBP1 IL2RG COX7B ITM2A RPL39 NDUFA1 CD40LG SSR4 MPP1 BLK BIN3 PNOC GTF2E2 TRAM1
    LY6E CCDC107 TLN1 ANXA1 OSTF1 HNRNPK TXN ATP6V1G1 NDUFA8 NUP214 FCN1 EGFL7 PHPT1 CLIC3 KLF6
    AKR1C3 RBM17 GATA3 VIM DNAJC1 ABI1 EPC1 HNRNPF SRGN PPA1 PRF1 PSAP RPS24 ANXA11 HHEX PDLIM1
    PGAM1 NPM3 ADD3 RGS10 TIAL1 PSMD13 IFITM2 IFITM1 IFITM3 RNH1 IRF7 TALDO1 CTSD ILK NUCB2
    LDHA CAT CD82 SPI1 PSMC3 MTCH2 TIMM10 LPXN POLR2G SLC3A2 OTUB1 BAD CAPN1 NEAT1 KAT5 CTSW
    SF3B2 POLD4 TBC1D10C PTPRCAP CORO1B GSTP1 UNC93B1 NDUFS8 MRPL21 MRPL48 TMEM126B CTSC FDX1
    IL18 CD3G FLI1 NINJ2 CD27 CHD4 LAG3 CD4 KLRG1 KLRB1 KLRC2 KLRC1 PRR4 WBP11 LDHB FKBP11
    COX14 HNRNPA1 CD63 NAP1L1 OSBPL8 BTG1 ISCU HVCN1 PPP1CC ERP29 OAS1 COX6A1 ACADS RNF34 SAP18
    POMP ALOX5AP WBP4 TSC22D1 ESD UCHL3 TNFSF13B APEX1 DHRS4L2 PSME2 TINF2 GZMH GZMB NFKBIA
    RN7SL1 RPL36AL ARF6 LGALS3 DAAM1 DHRS7 FOS CALM1 PPP2R5C CRIP1 NOP10 GCHFR CEP152 MYO5A
    RPS27L PPIB SPG21 PKM CSK SCAMP2 IMP3 ETFA CTSH IL16 IDH2 POLR3K NME4 STUB1 IL32 CORO7
    HMOX2 TNFRSF17 LAT BRD7 TMEM208 DPEP2 PSMD7 IRF8 SERPINF1 PSMB6 RNF167 CLEC10A TRAPPC1
    NCOR1 TNFRSF13B IFT20 UNC119 CCL5 CCL4 CWC25 DNAJC7 CCR10 COA3 SLC25A39 ABI3 SUPT4H1 VMP1
    PSMC5 DDX5 CD300A SUMO2 ACOX1 ST6GALNAC1 SRSF2 DCXR CD7 ANKRD12 RNF138 ACAA2 NOP56 IDH3B
    PCNA DTD1 NAA20 CST7 EIF2S2 DYNLRB1 RBM39 TOP1 YWHAB STK4 CD40 ZFAS1 PSMA7 ADRM1 RGS19 GZMM
    PRSS57
""".split()

# planted cell types and their marker genes (all in ``_SYMBOLS``)
_TYPES = {
    "T cell": ["CD3E", "CD3D", "CD2", "IL7R", "CCR7"],
    "B cell": ["MS4A1", "CD79A", "CD79B", "CD19"],
    "monocyte": ["CD14", "LYZ", "S100A8", "S100A9", "CST3"],
    "NK cell": ["NKG7", "GNLY", "KLRD1", "FCGR3A"],
    "CD8 T cell": ["CD8A", "CD8B"],
    "megakaryocyte": ["PPBP", "PF4"],
    "beta cell": ["INS"],
    "alpha cell": ["GCG"],
    "delta cell": ["SST"],
    "erythrocyte": ["HBB", "HBA1"],
}


def synthetic_counts(
    n_obs: int = 400,
    n_vars: int = 300,
    n_clusters: int = 4,
    *,
    n_markers: int = 12,
    fold_change: float = 6.0,
    imbalance: float = 1.0,
    theta: float = 5.0,
    mean_library_size: float = 2000.0,
    random_state: int = 0,
):
    """Negative-binomial counts with planted, imbalanced cell types and real gene symbols.

    Cluster ``k`` holds a share of cells proportional to ``1 / (k + 1) ** imbalance`` (at least
    5 cells). Each type over-expresses ``n_markers`` genes of its own by ``fold_change``: its
    known markers (e.g. ``CD3E`` for T cells, ``MS4A1`` for B cells, ``INS`` for beta cells)
    first, then further genes. Counts are gamma-Poisson (negative binomial with inverse
    dispersion ``theta``) around a log-normal baseline profile times a log-normal library size.
    Every gene symbol has a RefSeq summary (NKG7: Gene Ontology text) in NCBI's gene text, so
    the tools that read gene knowledge find text for all genes. Small and fast: meant for
    examples and tests.

    Parameters
    ----------
    n_obs
        Number of cells.
    n_vars
        Number of genes (at most 480).
    n_clusters
        Number of planted cell types (2 to 10).
    n_markers
        Over-expressed genes per type; ``n_clusters * n_markers`` must not exceed ``n_vars``.
    fold_change
        Mean fold change of a type's marker genes.
    imbalance
        0 gives equal sizes; larger values make later types rarer.
    theta
        Inverse dispersion of the negative binomial (larger: closer to Poisson).
    mean_library_size
        Mean total counts per cell.
    random_state
        Seed of the local generator (the global RNG is untouched).

    Returns
    -------
    :class:`~anndata.AnnData` with counts in ``X`` (CSR, float32), the planted type in
    ``obs["cell_type"]`` (categorical, for evaluation) and the markers of each type in
    ``uns["markers"]``.
    """
    import anndata as ad
    import pandas as pd

    if not 2 <= n_clusters <= len(_TYPES):
        raise ValueError(f"n_clusters must be between 2 and {len(_TYPES)}, got {n_clusters}")
    if not 1 <= n_vars <= len(_SYMBOLS):
        raise ValueError(f"n_vars must be between 1 and {len(_SYMBOLS)}, got {n_vars}")
    if n_clusters * n_markers > n_vars:
        raise ValueError("n_clusters * n_markers must not exceed n_vars")
    if n_obs < 5 * n_clusters:
        raise ValueError(f"n_obs must be at least 5 * n_clusters = {5 * n_clusters}")
    rng = np.random.default_rng(random_state)
    genes = list(_SYMBOLS[:n_vars])
    names = list(_TYPES)[:n_clusters]

    # imbalanced sizes, at least 5 cells each
    share = 1.0 / np.arange(1, n_clusters + 1) ** imbalance
    sizes = np.maximum(np.floor(share / share.sum() * n_obs).astype(int), 5)
    sizes[0] += n_obs - sizes.sum()
    labels = np.repeat(np.arange(n_clusters), sizes)
    labels = labels[rng.permutation(n_obs)]

    # markers: the type's known markers that are kept, then unused genes
    index = {g: i for i, g in enumerate(genes)}
    known = {i for t in names for g in _TYPES[t] if (i := index.get(g)) is not None}
    spare = [i for i in rng.permutation(n_vars) if i not in known]
    markers = []
    for t in names:
        own = [index[g] for g in _TYPES[t] if g in index][:n_markers]
        while len(own) < n_markers:
            own.append(spare.pop())
        markers.append(own)

    base = rng.lognormal(mean=0.0, sigma=1.0, size=n_vars)
    profiles = np.tile(base, (n_clusters, 1))
    for k, own in enumerate(markers):
        profiles[k, own] *= fold_change * rng.lognormal(0.0, 0.25, size=len(own))
    profiles /= profiles.sum(1, keepdims=True)
    library = mean_library_size * rng.lognormal(-0.125, 0.5, size=n_obs)
    mu = profiles[labels] * library[:, None]
    counts = rng.poisson(rng.gamma(theta, mu / theta)).astype(np.float32)

    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(np.asarray(names)[labels], categories=names)},
        index=[f"cell{i}" for i in range(n_obs)],
    )
    adata = ad.AnnData(
        X=sparse.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes)
    )
    adata.uns["markers"] = {
        t: [genes[i] for i in own] for t, own in zip(names, markers, strict=True)
    }
    return adata
