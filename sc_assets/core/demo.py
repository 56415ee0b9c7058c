"""Realistic synthetic stand-ins for GEO series GSE174609 (12 PBMC samples, 10x Chromium).

The real files cannot be downloaded here, so :func:`write_demo_series` writes files with the
same names, layout (genes x cells gzipped CSV, see :mod:`sc_assets.core.count_matrix_writer`),
gene list style and count statistics: 33,538 genes of the 10x GRCh38-3.0.0 reference style,
~9,000 cells per sample, log-normal library sizes with a median of ~5,500 UMIs, a
heavy-tailed gene distribution giving ~94.6% zeros, a few percent of mitochondrial counts per
cell, and PBMC cell types (T, NK, B, monocytes, DC, platelets) so the data is not uniform.

Counts are simulated the way UMIs arise: each cell draws its library size, then that many
UMIs from its cell type's gene distribution (an O(1) alias-table draw per UMI in a numba
kernel, ~60 M per full-size sample), which is much faster than one Poisson draw per cell and
gene (~300 M per sample). A full-size sample is simulated in ~3 s and written in ~2 s.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp

from sc_assets.core.count_matrix_writer import write_count_matrix
from sc_assets.core.names import SampleName


@dataclass(frozen=True)
class DemoSample:
    """One sample of a (demo) series: its GEO name and its number of cells at full size."""

    name: SampleName
    n_cells: int


def _series(*rows: tuple[int, str, int, int]) -> tuple[DemoSample, ...]:
    return tuple(
        DemoSample(SampleName(f"GSM{accession}", condition, donor), n_cells)
        for accession, condition, donor, n_cells in rows
    )


GSE174609: tuple[DemoSample, ...] = _series(
    (5320459, "Ctrl", 1, 9413),
    (5320460, "Ctrl", 2, 8891),
    (5320461, "Ctrl", 3, 9102),
    (5320462, "Ctrl", 4, 8764),
    (5320463, "Pre", 1, 9334),
    (5320464, "Pre", 2, 8978),
    (5320465, "Pre", 3, 9211),
    (5320466, "Pre", 4, 8643),
    (5320467, "Post", 1, 9208),
    (5320468, "Post", 2, 8543),
    (5320469, "Post", 3, 9017),
    (5320470, "Post", 4, 8320),
)
"""The 12 samples of GSE174609 in series order (4 donors x Ctrl/Pre/Post): 107,424 cells."""

N_GENES = 33_538
"""Genes of the 10x Genomics GRCh38-3.0.0 reference, the gene list of every GSE174609 file."""

MT_GENES: tuple[str, ...] = (
    "MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3",
    "MT-ND3", "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB",
)  # fmt: skip
"""The 13 mitochondrially encoded genes, in the reference's (chrM) order."""

DUPLICATED_GENES: tuple[str, ...] = (
    "TBCE", "LINC01238", "CYB561D2", "MATR3", "LINC01505",
    "HSPA14", "GOLGA8M", "GGT1", "ARMCX5-GPRASP2", "TMSB15B",
)  # fmt: skip
"""Symbols listed twice (two Ensembl ids each) in the GRCh38-3.0.0 reference, and in the demo."""

# The reference's first genes (chr1, in order) and its last ones: after the chrM block come
# genes on unplaced scaffolds (KI270*.1...), so the MT genes sit together near, not at, the end.
_HEAD_GENES = ("MIR1302-2HG", "FAM138A", "OR4F5", "AL627309.1", "AL627309.3")
_TAIL_GENES = (
    "AC011043.1", "AL592183.1", "AC007325.1", "AC007325.4", "AC007325.2", "AL354822.1",
    "AC023491.2", "AC004556.1", "AC233755.2", "AC233755.1", "AC240274.1", "AC213203.1",
    "FAM231C",
)  # fmt: skip

# --- Expression model -------------------------------------------------------------------------
# Shares are percentages of a cell's non-mitochondrial UMIs, chosen to resemble 10x v3 PBMCs.

_TOP_GENES: dict[str, float] = {
    "MALAT1": 3.0, "TMSB4X": 2.0, "B2M": 1.8, "EEF1A1": 1.6, "ACTB": 1.1, "TPT1": 0.9,
    "FTL": 0.7, "FTH1": 0.7, "TMSB10": 0.5, "HLA-B": 0.5, "MYL6": 0.45, "PTMA": 0.35,
    "FAU": 0.3, "UBA52": 0.3, "ACTG1": 0.3, "PFN1": 0.3, "HLA-A": 0.3, "HLA-C": 0.3,
    "GAPDH": 0.25, "CFL1": 0.25, "SRGN": 0.25, "EEF1G": 0.2, "OAZ1": 0.2, "BTG1": 0.2,
    "ARHGDIB": 0.2, "NEAT1": 0.2, "HLA-E": 0.2, "SERF2": 0.2, "TXNIP": 0.2, "EIF1": 0.2,
    "RACK1": 0.2, "EEF2": 0.15, "NACA": 0.15, "UBC": 0.15, "UBB": 0.15, "H3F3B": 0.15,
    "JUNB": 0.15, "CORO1A": 0.15, "LAPTM5": 0.15, "FOS": 0.1, "DUSP1": 0.1, "KLF6": 0.1,
    "ZFP36L2": 0.1, "COX4I1": 0.1, "PPIA": 0.15, "EIF4A1": 0.1, "SH3BGRL3": 0.12,
    "CD52": 0.15, "CD53": 0.08, "CD37": 0.08, "PTPRC": 0.08, "CXCR4": 0.08,
}  # fmt: skip
"""Housekeeping genes highly expressed in every PBMC type."""

_RIBOSOMAL_GENES: tuple[str, ...] = (
    "RPL3", "RPL4", "RPL5", "RPL6", "RPL7", "RPL7A", "RPL8", "RPL9", "RPL10", "RPL10A",
    "RPL11", "RPL12", "RPL13", "RPL13A", "RPL14", "RPL15", "RPL17", "RPL18", "RPL18A", "RPL19",
    "RPL21", "RPL22", "RPL23", "RPL23A", "RPL24", "RPL26", "RPL27", "RPL27A", "RPL28", "RPL29",
    "RPL30", "RPL31", "RPL32", "RPL34", "RPL35", "RPL35A", "RPL36", "RPL36A", "RPL37",
    "RPL37A", "RPL38", "RPL39", "RPL41", "RPLP0", "RPLP1", "RPLP2", "RPS2", "RPS3", "RPS3A",
    "RPS4X", "RPS4Y1", "RPS5", "RPS6", "RPS7", "RPS8", "RPS9", "RPS10", "RPS11", "RPS12",
    "RPS13", "RPS14", "RPS15", "RPS15A", "RPS16", "RPS17", "RPS18", "RPS19", "RPS20", "RPS21",
    "RPS23", "RPS24", "RPS25", "RPS26", "RPS27", "RPS27A", "RPS28", "RPS29", "RPSA",
)  # fmt: skip

_MT_SHARES = (6.0, 4.0, 22.0, 9.0, 1.5, 14.0, 15.0, 4.0, 1.0, 10.0, 3.0, 0.5, 10.0)
"""Relative expression of :data:`MT_GENES` (MT-CO1, MT-CO3 and MT-ATP6 dominate)."""


@dataclass(frozen=True)
class _CellType:
    name: str
    proportion: float
    """Expected fraction of a sample's cells."""
    library_factor: float
    """Library size relative to the other types (monocytes are bigger, platelets tiny)."""
    ribosomal_share: float
    """Percentage of non-MT UMIs from ribosomal protein genes (high in lymphocytes)."""
    markers: dict[str, float]
    """Marker gene -> share (percent) in this type."""


_CELL_TYPES: tuple[_CellType, ...] = (
    _CellType("CD4 T", 0.30, 0.85, 32.0, {
        "IL7R": 0.3, "LTB": 0.4, "IL32": 0.5, "CD3E": 0.15, "CD3D": 0.2, "CD3G": 0.08,
        "CCR7": 0.15, "LEF1": 0.1, "TCF7": 0.1, "SELL": 0.1, "CD4": 0.03, "MAL": 0.08,
        "TRAC": 0.15, "TRBC2": 0.2, "TRBC1": 0.08, "CD2": 0.08, "CD5": 0.05, "CD6": 0.04,
        "CD28": 0.03, "CD27": 0.08, "NOSIP": 0.08, "LDHB": 0.2, "GATA3": 0.03,
    }),
    _CellType("CD8 T", 0.13, 0.9, 30.0, {
        "CD8A": 0.15, "CD8B": 0.15, "CCL5": 0.6, "GZMK": 0.2, "GZMH": 0.1, "IL32": 0.4,
        "CD3E": 0.15, "CD3D": 0.2, "TRAC": 0.15, "TRBC2": 0.2, "CD2": 0.1, "NKG7": 0.2,
        "CST7": 0.05, "CD27": 0.05, "LAG3": 0.01, "EOMES": 0.02,
    }),
    _CellType("NK", 0.09, 0.95, 22.0, {
        "NKG7": 1.0, "GNLY": 2.0, "GZMB": 0.4, "GZMA": 0.3, "PRF1": 0.2, "KLRD1": 0.15,
        "KLRF1": 0.08, "FCGR3A": 0.1, "CTSW": 0.2, "CST7": 0.15, "FGFBP2": 0.2, "SPON2": 0.1,
        "KLRB1": 0.1, "CCL4": 0.1, "HOPX": 0.08, "NCAM1": 0.02, "TYROBP": 0.4, "FCER1G": 0.2,
        "TBX21": 0.03, "CCL5": 0.4,
    }),
    _CellType("B", 0.11, 1.0, 28.0, {
        "MS4A1": 0.2, "CD79A": 0.4, "CD79B": 0.2, "CD19": 0.03, "CD22": 0.03, "BANK1": 0.05,
        "IGHM": 0.8, "IGHD": 0.1, "IGKC": 1.5, "IGLC2": 0.5, "TCL1A": 0.15, "VPREB3": 0.05,
        "FCER2": 0.04, "PAX5": 0.02, "CD74": 1.2, "HLA-DRA": 0.8, "HLA-DRB1": 0.4,
        "HLA-DQA1": 0.1, "HLA-DQB1": 0.1, "HLA-DPA1": 0.2, "HLA-DPB1": 0.3, "LINC00926": 0.03,
    }),
    _CellType("CD14 Mono", 0.25, 1.5, 15.0, {
        "LYZ": 3.0, "S100A9": 2.5, "S100A8": 1.5, "S100A12": 0.2, "VCAN": 0.15, "FCN1": 0.4,
        "CST3": 0.6, "CSF1R": 0.05, "CD14": 0.1, "CD68": 0.1, "LGALS2": 0.1, "MNDA": 0.15,
        "TYROBP": 0.5, "FCER1G": 0.4, "LST1": 0.3, "AIF1": 0.4, "CTSS": 0.3, "CD74": 0.8,
        "HLA-DRA": 0.6, "S100A6": 0.4, "S100A4": 0.4, "LGALS1": 0.2, "SAT1": 0.3, "COTL1": 0.2,
        "PSAP": 0.3, "CEBPD": 0.05, "IL1B": 0.05, "CXCL8": 0.05,
    }),
    _CellType("FCGR3A Mono", 0.06, 1.3, 16.0, {
        "FCGR3A": 0.3, "MS4A7": 0.2, "CDKN1C": 0.1, "LST1": 0.5, "AIF1": 0.5, "IFITM3": 0.2,
        "IFITM2": 0.2, "FCER1G": 0.5, "TYROBP": 0.5, "CST3": 0.5, "LYZ": 0.6, "COTL1": 0.3,
        "SAT1": 0.3, "RHOC": 0.1, "CD74": 0.8, "HLA-DPB1": 0.3,
    }),
    _CellType("DC", 0.02, 1.4, 18.0, {
        "FCER1A": 0.1, "CLEC10A": 0.1, "CD1C": 0.05, "CLEC4C": 0.03, "LILRA4": 0.05,
        "IRF7": 0.05, "IRF8": 0.1, "HLA-DRA": 1.2, "CD74": 1.5, "HLA-DQA1": 0.3,
        "HLA-DPB1": 0.5, "CST3": 0.6, "LYZ": 0.5, "GZMB": 0.1, "PLD4": 0.1, "ITM2C": 0.1,
    }),
    _CellType("Platelet", 0.01, 0.4, 8.0, {
        "PPBP": 3.0, "PF4": 1.5, "GNG11": 0.3, "SPARC": 0.2, "TUBB1": 0.2, "CLU": 0.15,
        "NRGN": 0.5, "GP9": 0.05, "ITGA2B": 0.05,
    }),
)  # fmt: skip

_MARKER_LEAK = 1 / 40
"""A marker's share in the other cell types, relative to its share in its own type."""

_OTHER_KNOWN_GENES: tuple[str, ...] = (
    "CD48", "CD44", "CD69", "CD38", "CD247", "CD34", "KIT", "ISG15", "IFI6", "IFITM1", "MX1",
    "STAT1", "STAT3", "JUN", "IER2", "NFKBIA", "TNFAIP3", "CCL3", "TNF", "IFNG", "IL2RA",
    "FOXP3", "CTLA4", "PDCD1", "TIGIT", "HAVCR2", "MKI67", "TOP2A", "PCNA", "TUBA1B", "TUBB",
    "STMN1", "HBB", "HBA1", "HBA2", "XIST", "DDX3Y", "KDM5D", "UTY", "EIF1AY", "SPI1",
    "CEBPA", "CEBPB", "GATA1", "GATA2", "RORC", "BCL6", "PRDM1", "XBP1", "JCHAIN", "MZB1",
    "SDC1", "TNFRSF17", "ZAP70", "LCK", "FYN", "ITK", "LAT", "SH2D1A", "CD14", "ITGAM",
    "ITGAX", "CD33", "CD86", "CD80", "CD40", "CD83", "CCR2", "CX3CR1", "CSF3R", "FCGR1A",
    "MPO", "ELANE", "PTPRCAP", "RUNX3", "IKZF1", "IKZF2", "BCL2", "MCL1", "BIRC3", "NR4A1",
    "NR4A2", "KLF2", "KLF4", "EGR1", "ATF3", "HSPA1A", "HSPA1B", "HSP90AA1", "HSP90AB1",
    "DNAJB1", "VIM", "LGALS3", "ANXA1", "ANXA2", "S100A10", "S100A11", "CALM2", "YBX1",
    "NPM1", "HNRNPA1", "SRSF5", "DDX5", "PABPC1", "TOMM7", "ATP5MG", "NDUFA4", "UQCRB",
    "SOD1", "PRDX1", "GPX1", "GSTP1", "ALDOA", "PGK1", "ENO1", "LDHA", "PKM", "TPI1",
    "SELENOP", "APOE", "CCL2", "CXCL10", "IL10", "IL6", "TGFB1", "IRF4", "POU2AF1",
    "CIITA", "CD81", "CD99", "CD164", "ITGB2", "ITGB1", "LSP1", "SPN", "SEPT7", "ARPC2",
    "ARPC3", "MYL12A", "MYL12B", "RAC2", "RHOA", "CDC42", "GMFG", "EMP3", "TAGLN2",
)  # fmt: skip
"""Further well-known genes, moderately expressed (like the generated protein-coding genes)."""

_MEDIAN_UMIS = 5500.0
"""Median UMIs per cell of GSE174609."""
_LIBRARY_SIGMA = 0.45
"""log-sd of library sizes: most cells between ~2,300 and ~13,000 UMIs."""
_MIN_UMIS = 500
"""Cell Ranger's filtered matrices hold no near-empty droplets."""
_SAMPLE_DEPTH_SIGMA = 0.05
"""log-sd of the median library size between samples."""
_MT_MEDIAN = 0.05
"""Median fraction of a cell's UMIs from MT genes (10x PBMC: a few percent)."""
_MT_LOGIT_SIGMA = 0.45
"""Cell-to-cell sd of the MT fraction on the logit scale: 5-95% of cells within ~2.5-12%."""
_SAMPLE_MT_SIGMA = 0.15
"""sd of the samples' median MT fraction, on the logit scale."""
_STRESSED_FRACTION = 0.03
"""Cells with a high mitochondrial fraction (damaged or dying cells), ~18% MT counts."""
_STRESSED_MT_MEDIAN = 0.18

# Generated genes: log-normal weights, location by kind. Clone-named and long non-coding genes
# are mostly silent in PBMCs; this spread gives ~94.6% zeros at ~5,500 UMIs per cell.
_KIND_PROTEIN, _KIND_NONCODING, _KIND_SILENT, _KIND_KNOWN = range(4)
_KIND_LOG_MEAN = np.array([0.0, -2.5, -5.0, 1.5])
_GENE_LOG_SIGMA = 2.2
_GENE_LOG_CAP = 5.5
_TYPE_LOG_SIGMA = 0.35
"""Per-cell-type variation of the generated genes' weights."""
_SAMPLE_LOG_SIGMA = 0.1
"""Per-sample (batch) variation of every gene's weight."""

_CHUNK_UMIS = 4_000_000
"""UMIs simulated per call into the kernel: bounds the memory of the uniform draws (32 MB)."""


def demo_gene_symbols() -> list[str]:
    """The 33,538 gene symbols of every demo sample, in file order.

    Deterministic (the same list for every call, seed and sample): styled on the 10x
    GRCh38-3.0.0 reference. It starts with the reference's first genes (``MIR1302-2HG``,
    ``FAM138A``, ``OR4F5``...), holds a few hundred real, well-known genes (ribosomal,
    housekeeping, PBMC markers), the 10 :data:`DUPLICATED_GENES` twice each, generated symbols
    in the reference's styles (``AL627309.1``-like clone names, ``LINC01409``, ``FAM41C``,
    ``C1orf159``, ``-AS1`` antisense, ``ZNF``, ``OR``, ``IGHV``... and protein-family names),
    and near its end the 13 :data:`MT_GENES` together, followed by genes on unplaced scaffolds
    as in the reference. No other symbol starts with ``MT-``.
    """
    return list(_gene_table()[0])


def demo_cell_counts(scale: float, samples: int = len(GSE174609)) -> list[int]:
    """The cells of each sample :func:`write_demo_series` writes at ``scale``."""
    return [max(1, round(sample.n_cells * scale)) for sample in demo_samples(samples)]


def demo_samples(samples: int = len(GSE174609)) -> list[DemoSample]:
    """The first ``samples`` samples of the demo series, in series order.

    The first 12 are :data:`GSE174609`. Further ones continue in the same style: accessions
    count on from GSM5320471 and each further block of 12 adds donors 5-8, 9-12... for Ctrl,
    Pre and Post in turn (``GSM5320471_Ctrl5``, ..., ``GSM5320475_Pre5``...), with the cell
    numbers of the real samples in the same position.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    base = GSE174609
    first_accession = int(base[0].name.sample_id.removeprefix("GSM"))
    donors_per_condition = 4
    result = []
    for index in range(samples):
        block, position = divmod(index, len(base))
        template = base[position]
        name = SampleName(
            sample_id=f"GSM{first_accession + index}",
            condition=template.name.condition,
            donor=template.name.donor + block * donors_per_condition,
        )
        result.append(DemoSample(name, template.n_cells))
    return result


def simulate_counts(
    sample_index: int, n_cells: int, *, seed: int = 0
) -> tuple[sp.csr_array, list[str]]:
    """Simulate one demo sample: cells x genes UMI counts and its cell barcodes.

    Parameters
    ----------
    sample_index
        Position of the sample in the series (0 for the first): each sample draws different
        cells, library sizes and cell-type proportions, and has a small batch effect.
    n_cells
        Number of cells (rows).
    seed
        Series seed. The gene profiles of the cell types depend on it only, so all samples of
        a series share the same biology; identical arguments give identical results.

    Returns
    -------
    A CSR int32 matrix (``n_cells`` x :data:`N_GENES`, columns in :func:`demo_gene_symbols`
    order) and ``n_cells`` unique, sorted 10x-style barcodes (``AAACCCACAAGCGATG-1``).
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be at least 1, got {n_cells}")
    if sample_index < 0:
        raise ValueError(f"sample_index must be non-negative, got {sample_index}")
    profiles = _profiles(_checked_seed(seed))
    rng = np.random.default_rng([seed, 1, sample_index])
    n_types = len(_CELL_TYPES)

    # Sample-level variation: cell-type mix, depth, MT level and a mild batch effect.
    proportions = rng.dirichlet(200.0 * profiles.proportions)
    cell_types = rng.choice(n_types, size=n_cells, p=proportions).astype(np.int64)
    depth = _MEDIAN_UMIS * np.exp(rng.normal(0.0, _SAMPLE_DEPTH_SIGMA))
    batch = np.exp(rng.normal(0.0, _SAMPLE_LOG_SIGMA, size=profiles.weights.shape[1]))
    prob, alias = _alias_tables(profiles.weights * batch)

    log_library = rng.normal(np.log(depth), _LIBRARY_SIGMA, size=n_cells)
    totals = np.exp(log_library) * profiles.library_factors[cell_types]
    totals = np.maximum(np.rint(totals), _MIN_UMIS).astype(np.int64)
    stressed = rng.random(n_cells) < _STRESSED_FRACTION
    mt_logit = np.where(stressed, _logit(_STRESSED_MT_MEDIAN), _logit(_MT_MEDIAN))
    mt_logit = mt_logit + rng.normal(0.0, _SAMPLE_MT_SIGMA)
    mt_fraction = 1.0 / (1.0 + np.exp(-(mt_logit + rng.normal(0.0, _MT_LOGIT_SIGMA, n_cells))))
    mt_totals = rng.binomial(totals, mt_fraction).astype(np.int64)

    pieces = []
    bounds = _chunk_bounds(totals, _CHUNK_UMIS)
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        uniforms = rng.random(int(totals[start:stop].sum()))
        pieces.append(
            _draw_umis(
                totals[start:stop],
                mt_totals[start:stop],
                cell_types[start:stop],
                prob,
                alias,
                profiles.mt_prob,
                profiles.mt_alias,
                profiles.non_mt_genes,
                profiles.mt_genes,
                uniforms,
                N_GENES,
            )
        )
    genes_per_cell = np.concatenate([np.diff(indptr) for indptr, _, _ in pieces])
    indptr = np.concatenate([np.zeros(1, np.int64), np.cumsum(genes_per_cell)])
    counts = sp.csr_array(
        (np.concatenate([p[2] for p in pieces]), np.concatenate([p[1] for p in pieces]), indptr),
        shape=(n_cells, N_GENES),
    )
    return counts, _barcodes(rng, n_cells)


def write_demo_series(
    out_dir: str | os.PathLike[str],
    *,
    scale: float = 1.0,
    samples: int = len(GSE174609),
    seed: int = 0,
    workers: int = 2,
) -> list[Path]:
    """Write GSE174609-like per-sample count-matrix files into ``out_dir``.

    Parameters
    ----------
    out_dir
        Folder for the files, created if missing. Files of the same names are replaced
        atomically; other files are left alone.
    scale
        Cells per sample relative to the real series: sample ``i`` gets
        ``max(1, round(n_cells_i * scale))`` cells (``scale=1``: ~9,000 cells, ~633 MB of CSV
        text, ~27 MB gzipped per sample; ``scale=0.02``: ~180 cells, above the ``cell_count``
        check's default minimum of 100; ``scale=0.01`` gives ~90, which fail it).
    samples
        Number of samples: the first ``samples`` of :func:`demo_samples` (12 = the real series;
        more continue it as ``Ctrl5``, ``Pre5``...).
    seed
        Non-negative random seed. Identical arguments write byte-identical files; different
        samples differ.
    workers
        Processes writing samples in parallel (each runs single-threaded); 1 writes in this
        process. The full series takes ~35 s with 2 workers on 2 cores, ~0.9 GB per worker.

    Returns
    -------
    The paths written, in series order, e.g. ``out_dir/GSM5320459_Ctrl1_count_matrix.csv.gz``.

    Notes
    -----
    Worker processes are started with ``spawn`` (safe in multi-threaded callers), which
    imports the caller's main module again: a script calling this with ``workers > 1`` needs
    the usual ``if __name__ == "__main__":`` guard.
    """
    if not scale > 0:  # also rejects NaN
        raise ValueError(f"scale must be positive, got {scale}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    _checked_seed(seed)
    out_dir = Path(out_dir)
    jobs = [
        (out_dir / sample.name.file_name, index, n_cells, seed)
        for index, (sample, n_cells) in enumerate(
            zip(demo_samples(samples), demo_cell_counts(scale, samples), strict=True)
        )
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = min(workers, len(jobs))
    if workers == 1:
        return [_write_sample(*job) for job in jobs]
    # spawn, not fork: the caller may be a multi-threaded process (Dagster, a notebook).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_write_sample, *zip(*jobs, strict=True)))


def _write_sample(path: Path, sample_index: int, n_cells: int, seed: int) -> Path:
    counts, barcodes = simulate_counts(sample_index, n_cells, seed=seed)
    return write_count_matrix(path, counts, demo_gene_symbols(), barcodes)


def _checked_seed(seed: int) -> int:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def _chunk_bounds(totals: np.ndarray, max_umis: int) -> list[int]:
    """Boundaries of consecutive cell ranges, each starting within a new ``max_umis`` UMIs."""
    group = (np.cumsum(totals) - totals) // max_umis
    return [0, *(np.flatnonzero(np.diff(group)) + 1).tolist(), int(totals.size)]


def _barcodes(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` unique random 16-base barcodes plus ``-1``, sorted as Cell Ranger lists them."""
    # 16 bases of 2 bits are one 32-bit number; numeric order is ACGT lexicographic order.
    codes = np.sort(rng.choice(2**32, size=n, replace=False))
    shifts = np.arange(30, -1, -2, dtype=np.uint64)
    bases = (codes.astype(np.uint64)[:, None] >> shifts) & np.uint64(3)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)[bases]
    return [row.tobytes().decode() + "-1" for row in letters]


@dataclass(frozen=True)
class _Profiles:
    weights: np.ndarray
    """Cell types x non-MT genes expression weights (each row sums to 1)."""
    mt_prob: np.ndarray
    """Alias table of the MT genes (see :func:`_alias_tables`)."""
    mt_alias: np.ndarray
    non_mt_genes: np.ndarray
    """Column of each non-MT gene in the full gene list."""
    mt_genes: np.ndarray
    proportions: np.ndarray
    library_factors: np.ndarray


@functools.lru_cache(maxsize=4)
def _profiles(seed: int) -> _Profiles:
    """The series' cell-type gene distributions (shared by all its samples)."""
    symbols, kinds = _gene_table()
    rng = np.random.default_rng([seed, 0])
    is_mt = np.char.startswith(np.array(symbols), "MT-")
    non_mt = np.flatnonzero(~is_mt)
    mt = np.flatnonzero(is_mt)
    position = {symbol: i for i, symbol in enumerate(np.array(symbols)[non_mt])}

    free = np.ones(non_mt.size, dtype=bool)  # genes without a fixed share
    for gene in [*_TOP_GENES, *_RIBOSOMAL_GENES]:
        free[position[gene]] = False
    for cell_type in _CELL_TYPES:
        for gene in cell_type.markers:
            free[position[gene]] = False
    # Capped, so that no anonymous gene outranks the housekeeping genes (MALAT1, ACTB...).
    spread = np.minimum(rng.normal(0.0, _GENE_LOG_SIGMA, non_mt.size), _GENE_LOG_CAP)
    base = np.exp(_KIND_LOG_MEAN[kinds[non_mt]] + spread)
    ribosomal = np.array([position[gene] for gene in _RIBOSOMAL_GENES])
    ribosomal_profile = rng.lognormal(0.0, 0.5, ribosomal.size)
    ribosomal_profile /= ribosomal_profile.sum()
    # A marker's reference share (for the leak into other types) is its highest one.
    all_markers: dict[str, float] = {}
    for cell_type in _CELL_TYPES:
        for gene, share in cell_type.markers.items():
            all_markers[gene] = max(share, all_markers.get(gene, 0.0))

    weights = np.zeros((len(_CELL_TYPES), non_mt.size))
    for t, cell_type in enumerate(_CELL_TYPES):
        row = weights[t]
        for gene, share in _TOP_GENES.items():
            row[position[gene]] = share
        row[ribosomal] = cell_type.ribosomal_share * ribosomal_profile
        for gene, share in all_markers.items():
            row[position[gene]] = cell_type.markers.get(gene, share * _MARKER_LEAK)
        free_weights = base[free] * np.exp(rng.normal(0.0, _TYPE_LOG_SIGMA, int(free.sum())))
        row[free] = free_weights * (100.0 - row.sum()) / free_weights.sum()
        row /= row.sum()

    proportions = np.array([ct.proportion for ct in _CELL_TYPES])
    proportions /= proportions.sum()
    # Scale so the library-size factors average to 1 (in log space) over the cell-type mix:
    # the median library size then stays at _MEDIAN_UMIS.
    factors = np.array([ct.library_factor for ct in _CELL_TYPES])
    factors /= np.exp(np.sum(proportions * np.log(factors)))
    mt_prob, mt_alias = _alias_tables(np.array([_MT_SHARES]))
    return _Profiles(
        weights=weights,
        mt_prob=mt_prob[0],
        mt_alias=mt_alias[0],
        non_mt_genes=non_mt.astype(np.int64),
        mt_genes=mt.astype(np.int64),
        proportions=proportions,
        library_factors=factors,
    )


@numba.njit(cache=True, nogil=True)
def _alias_tables(weights):
    """Walker/Vose alias tables of each row of ``weights`` (rows need not sum to 1).

    Draws from a row then cost O(1) whatever the number of genes: with ``x = u * n`` for a
    uniform ``u``, the draw is ``i = int(x)`` if ``x - i < prob[i]``, else ``alias[i]``. A
    binary search over 33,538 cumulative weights per UMI was 5x slower.
    """
    n_rows, n = weights.shape
    prob = np.ones((n_rows, n))
    alias = np.empty((n_rows, n), dtype=np.int64)
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    for r in range(n_rows):
        scaled = weights[r] * (n / weights[r].sum())
        n_small = 0
        n_large = 0
        for i in range(n):
            alias[r, i] = i
            if scaled[i] < 1.0:
                small[n_small] = i
                n_small += 1
            else:
                large[n_large] = i
                n_large += 1
        while n_small > 0 and n_large > 0:
            n_small -= 1
            lo = small[n_small]
            hi = large[n_large - 1]
            prob[r, lo] = scaled[lo]
            alias[r, lo] = hi
            scaled[hi] -= 1.0 - scaled[lo]
            if scaled[hi] < 1.0:
                n_large -= 1
                small[n_small] = hi
                n_small += 1
        # Whatever is left (only rounding errors away from 1) keeps prob 1 and its own index.
    return prob, alias


@numba.njit(inline="always")
def _alias_draw(prob, alias, u):
    x = u * prob.size
    i = min(int(x), prob.size - 1)  # u * n may round up to n for u just below 1
    return i if x - i < prob[i] else alias[i]


@numba.njit(cache=True, nogil=True)
def _draw_umis(totals, mt_totals, cell_types, prob, alias, mt_prob, mt_alias, non_mt_genes,
               mt_genes, uniforms, n_genes):  # fmt: skip
    """Assign each cell's UMIs to genes (alias sampling); return the chunk's CSR pieces.

    Cell ``c`` has ``totals[c]`` UMIs, ``mt_totals[c]`` of them mitochondrial, drawn from row
    ``cell_types[c]`` of the non-MT alias tables and from the MT ones; ``uniforms`` holds one
    uniform draw per UMI, consumed in order. Returns ``indptr`` (from 0), ``indices`` (sorted
    per cell) and ``data``.
    """
    n_cells = totals.size
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    indices = np.empty(uniforms.size, dtype=np.int32)  # at most one stored value per UMI
    data = np.empty(uniforms.size, dtype=np.int32)
    counts = np.zeros(n_genes, dtype=np.int32)
    touched = np.empty(n_genes, dtype=np.int32)
    u = 0
    nnz = 0
    for c in range(n_cells):
        n_touched = 0
        cell_prob = prob[cell_types[c]]
        cell_alias = alias[cell_types[c]]
        n_non_mt = totals[c] - mt_totals[c]
        for k in range(totals[c]):
            if k < n_non_mt:
                gene = non_mt_genes[_alias_draw(cell_prob, cell_alias, uniforms[u])]
            else:
                gene = mt_genes[_alias_draw(mt_prob, mt_alias, uniforms[u])]
            u += 1
            if counts[gene] == 0:
                touched[n_touched] = gene
                n_touched += 1
            counts[gene] += 1
        for gene in np.sort(touched[:n_touched]):
            indices[nnz] = gene
            data[nnz] = counts[gene]
            counts[gene] = 0
            nnz += 1
        indptr[c + 1] = nnz
    return indptr, indices[:nnz].copy(), data[:nnz].copy()


# --- Gene symbols -----------------------------------------------------------------------------

_SYMBOLS_SEED = 174609
"""Fixed: the gene list is the same for every series seed, as in the real data."""

_FAMILIES: tuple[tuple[str, int], ...] = (
    ("ABCA", 13), ("ABCB", 11), ("ABCC", 12), ("ACOT", 13), ("ACSL", 6), ("ADAM", 33),
    ("ADAMTS", 20), ("ADCY", 10), ("AGAP", 11), ("AKAP", 17), ("ALDH", 18), ("ANKRD", 65),
    ("ANO", 10), ("ANXA", 13), ("ARHGAP", 45), ("ARHGEF", 40), ("ARID", 5), ("ATP", 13),
    ("BTBD", 19), ("C1QTNF", 9), ("CACNA", 2), ("CAPN", 15), ("CASP", 14), ("CCDC", 190),
    ("CDC", 45), ("CDH", 26), ("CDK", 20), ("CEP", 295), ("CHD", 9), ("CLDN", 25),
    ("CLEC", 18), ("COL", 28), ("CPNE", 9), ("CSNK", 2), ("CYP", 51), ("DCAF", 17),
    ("DDX", 60), ("DENND", 6), ("DHX", 58), ("DLG", 5), ("DNAH", 17), ("DNAJC", 30),
    ("DOCK", 11), ("DUSP", 28), ("EFHC", 2), ("ELMO", 3), ("EPB", 49), ("EXOC", 8),
    ("FBXL", 22), ("FBXO", 48), ("FGF", 23), ("FKBP", 15), ("FZD", 10), ("GALNT", 18),
    ("GBP", 7), ("GPR", 183), ("GRIN", 3), ("GTF", 3), ("HDAC", 11), ("HECTD", 4),
    ("IFT", 172), ("IL", 37), ("INPP", 5), ("ITGA", 11), ("ITGB", 8), ("KCNA", 10),
    ("KCNJ", 16), ("KIF", 27), ("KLHL", 42), ("KRT", 86), ("LAMA", 5), ("LRP", 12),
    ("LRRC", 75), ("MAP", 7), ("MAPK", 15), ("MBD", 6), ("MED", 31), ("MEGF", 11),
    ("MMP", 28), ("MYO", 19), ("NDUFA", 13), ("NEK", 11), ("NLRP", 14), ("NUP", 214),
    ("PCDH", 20), ("PDE", 11), ("PHF", 24), ("PLXN", 4), ("PPP", 6), ("PRR", 36),
    ("PSMD", 14), ("RAB", 44), ("RAD", 54), ("RBM", 48), ("RGS", 22), ("RNF", 225),
    ("SCN", 11), ("SEMA", 7), ("SH3", 5), ("SLC", 45), ("SMARC", 5), ("SNX", 33),
    ("SOX", 30), ("SPATA", 33), ("SYT", 17), ("TAF", 15), ("TBC1D", 32), ("TLR", 10),
    ("TMEM", 270), ("TNFRSF", 25), ("TRIM", 75), ("TSPAN", 33), ("TTC", 39), ("UBE", 4),
    ("USP", 54), ("VPS", 54), ("WDR", 98), ("ZBTB", 49), ("ZC3H", 18), ("ZDHHC", 24),
)  # fmt: skip
"""Gene-family prefixes and their largest member number (``TMEM270``, ``CCDC190``...)."""


@functools.cache
def _gene_table() -> tuple[tuple[str, ...], np.ndarray]:
    """Gene symbols in file order, and an expression kind (``_KIND_*``) per gene."""
    rng = np.random.default_rng(_SYMBOLS_SEED)
    named = [*_TOP_GENES, *_RIBOSOMAL_GENES]
    named += [gene for ct in _CELL_TYPES for gene in ct.markers]
    named += list(_OTHER_KNOWN_GENES)
    named = list(dict.fromkeys(named))  # markers are shared by types; keep first occurrences
    taken = {*named, *DUPLICATED_GENES, *_HEAD_GENES, *MT_GENES, *_TAIL_GENES}

    # The body is shuffled in units, so that generated neighbours (AL627309.1, AL627309.2;
    # GENE, GENE-AS1) stay together as in a genome-ordered reference.
    units: list[list[tuple[str, int]]] = [[(gene, _KIND_KNOWN)] for gene in named]
    units += [[(gene, _KIND_PROTEIN)] for gene in DUPLICATED_GENES for _ in range(2)]
    fixed = len(_HEAD_GENES) + len(MT_GENES) + len(_TAIL_GENES)
    missing = N_GENES - fixed - sum(len(unit) for unit in units)
    for make, target in _symbol_styles(rng):
        # The last style (target None) fills whatever is missing.
        quota = missing if target is None else min(target, missing)
        missing -= quota
        while quota > 0:  # a unit colliding with names already taken is drawn again
            unit = [(name, kind) for name, kind in make() if name not in taken][:quota]
            taken.update(name for name, _ in unit)
            if unit:
                units.append(unit)
                quota -= len(unit)
    order = rng.permutation(len(units))
    body = [gene for i in order for gene in units[i]]
    rows = (
        [(gene, _KIND_NONCODING) for gene in _HEAD_GENES]
        + body
        + [(gene, _KIND_PROTEIN) for gene in MT_GENES]  # kind unused: MT genes have own shares
        + [(gene, _KIND_SILENT) for gene in _TAIL_GENES]
    )
    symbols = tuple(gene for gene, _ in rows)
    kinds = np.array([kind for _, kind in rows], dtype=np.int64)
    return symbols, kinds


_Unit = list[tuple[str, int]]


def _symbol_styles(rng: np.random.Generator) -> list[tuple[Callable[[], _Unit], int | None]]:
    """Makers of one unit of generated symbols, each with its number of names.

    The numbers follow the make-up of the GRCh38-3.0.0 reference: ~28% clone-named genes,
    ~1,300 LINCs, a few hundred ZNF, C*orf, FAM, OR and V-segment genes; the rest are
    protein-coding-like names (gene families and other stems), ~10% with an antisense partner.
    """

    def number(high: int) -> int:
        return int(rng.integers(1, high + 1))

    def letter(p: float) -> str:
        # Paralogue suffixes: A and B are by far the most common (KRT6A, KRT6B, KRT6C).
        return "ABCDEF"[min(int(rng.geometric(0.5)), 6) - 1] if rng.random() < p else ""

    def with_antisense(gene: str) -> _Unit:
        if rng.random() < 0.1:
            return [(gene, _KIND_PROTEIN), (f"{gene}-AS{rng.geometric(0.8)}", _KIND_NONCODING)]
        return [(gene, _KIND_PROTEIN)]

    def clone() -> _Unit:
        prefix, width, high = [
            ("AC", 6, 250_000), ("AL", 6, 360_000), ("AP", 6, 6_000), ("AF", 6, 300_000),
            ("BX", 6, 7_000), ("CR", 6, 390_000), ("FO", 6, 700_000), ("Z", 5, 99_000),
        ][rng.choice(8, p=[0.58, 0.3, 0.05, 0.02, 0.015, 0.015, 0.01, 0.01])]  # fmt: skip
        stem = f"{prefix}{number(high):0{width}d}"
        kind = _KIND_SILENT if rng.random() < 0.5 else _KIND_NONCODING
        count = min(int(rng.geometric(0.55)), 9)
        return [(f"{stem}.{i}", kind) for i in rng.permutation(count) + 1]

    def linc() -> _Unit:
        return [(f"LINC{number(2900):05d}", _KIND_NONCODING)]

    def znf() -> _Unit:
        return [(f"ZNF{number(880)}", _KIND_PROTEIN)]

    def orf() -> _Unit:
        chromosome = ["X", *map(str, range(1, 23))][rng.integers(0, 23)]
        return [(f"C{chromosome}orf{number(200)}", _KIND_PROTEIN)]

    def fam() -> _Unit:
        return [(f"FAM{number(240)}{letter(0.6)}", _KIND_PROTEIN)]

    def kiaa() -> _Unit:
        return [(f"KIAA{number(2030):04d}", _KIND_PROTEIN)]

    def olfactory() -> _Unit:
        family, subfamily = number(14), "ABCDEFGHIJKLMNPSTXZ"[rng.integers(0, 19)]
        return [(f"OR{family}{subfamily}{number(30)}", _KIND_SILENT)]

    def v_segment() -> _Unit:
        locus = ["IGHV", "IGKV", "IGLV", "TRAV", "TRBV", "TRGV", "TRDV"][rng.integers(0, 7)]
        return [(f"{locus}{number(11)}-{number(70)}", _KIND_NONCODING)]

    def host_gene() -> _Unit:
        return [(f"MIR{number(5000)}HG", _KIND_NONCODING)]

    def family() -> _Unit:
        prefix, high = _FAMILIES[rng.integers(0, len(_FAMILIES))]
        return with_antisense(f"{prefix}{number(high)}{letter(0.25)}")

    def stem() -> _Unit:
        # Pronounceable stems (DRAK1, STELB, PLOMD3...) stand for the many unique symbols.
        parts = [
            _ONSETS[rng.integers(0, len(_ONSETS))],
            "AEIOUY"[rng.integers(0, 6)],
            _CODAS[rng.integers(0, len(_CODAS))],
        ]
        if rng.random() < 0.4:
            parts.append("ABCDEFGHKLMNPRST"[rng.integers(0, 16)])
        suffix = f"{number(20)}{letter(0.2)}" if rng.random() < 0.7 else ""
        return with_antisense("".join(parts) + suffix)

    return [
        (clone, 9_300), (linc, 1_300), (znf, 650), (orf, 500), (fam, 450), (kiaa, 100),
        (olfactory, 380), (v_segment, 400), (host_gene, 120), (family, 5_000), (stem, None),
    ]  # fmt: skip


_ONSETS = (
    "B", "BR", "C", "CL", "CR", "D", "DR", "F", "FR", "G", "GR", "H", "K", "KL", "L", "M", "N",
    "P", "PL", "PR", "R", "S", "SL", "SN", "ST", "T", "TR", "V", "W", "Z",
)  # fmt: skip
_CODAS = (
    "B", "C", "D", "G", "K", "L", "M", "N", "P", "R", "S", "T", "X", "RK", "LD", "NK", "RC",
    "MP", "ST", "RN", "NT", "SK",
)  # fmt: skip
