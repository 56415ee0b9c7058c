"""A demo study in every input layout, with its samplesheet: "bring your own data" to try.

Each sample is a demo sample (:func:`sc_assets.core.demo.simulate_counts`) written in another
layout a lab holds: GEO's CSV, a TSV, a cells-as-rows CSV, Cell Ranger HDF5 (v3 and 1-2), MTX
folders (v3, v2), STARsolo's output, a prefixed GEO trio, and ``.h5ad`` files whose counts are
in a layer or in ``raw``. The samplesheet names them all with metadata columns, so
``sc-assets ingest --samplesheet`` reads them all into one merge; the tests and ``make bench``
use the same writers.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from sc_assets.core.count_matrix_writer import write_count_matrix
from sc_assets.core.demo import demo_gene_symbols, demo_samples, simulate_counts
from sc_assets.core.genes import unique_gene_names
from sc_assets.core.tenx_writers import write_10x_h5, write_10x_mtx

#: The samplesheet's columns besides the metadata.
SHEET_COLUMNS = ("sample", "path", "format", "orientation", "counts_layer", "genome")


@dataclass(frozen=True)
class Counts:
    """One sample's counts and names, as every writer takes them."""

    X: sp.csr_matrix
    """Cells x genes raw counts."""
    barcodes: list[str]
    genes: list[str]
    gene_ids: list[str]


#: A writer: (folder, sample name, counts) -> (path to name in the sheet, sheet options).
Writer = Callable[[Path, str, Counts], tuple[Path, dict[str, str]]]


def _geo_csv(folder: Path, name: str, c: Counts) -> tuple[Path, dict[str, str]]:
    path = folder / f"{name}.csv.gz"
    write_count_matrix(path, c.X, c.genes, c.barcodes)
    return path, {}


def _tsv(folder: Path, name: str, c: Counts) -> tuple[Path, dict[str, str]]:
    path = folder / f"{name}.tsv"
    write_count_matrix(path, c.X, c.genes, c.barcodes, sep="\t", compress=False)
    return path, {}


def _cells_as_rows(folder: Path, name: str, c: Counts) -> tuple[Path, dict[str, str]]:
    path = folder / f"{name}.csv.gz"
    write_count_matrix(path, c.X, c.genes, c.barcodes, orientation="cells_x_genes")
    return path, {"orientation": "cells_x_genes"}


def _cellranger_h5(folder: Path, name: str, c: Counts) -> tuple[Path, dict[str, str]]:
    path = folder / f"{name}_filtered_feature_bc_matrix.h5"
    write_10x_h5(path, c.X, c.barcodes, c.gene_ids, c.genes)
    return path, {}


def _cellranger2_h5(folder: Path, name: str, c: Counts) -> tuple[Path, dict[str, str]]:
    path = folder / f"{name}_filtered_gene_bc_matrices_h5.h5"
    write_10x_h5(path, c.X, c.barcodes, c.gene_ids, c.genes, version=2, genome="GRCh38")
    return path, {"genome": "GRCh38"}


def _mtx_v3(folder: Path, name: str, c: Counts) -> tuple[Path, dict[str, str]]:
    path = folder / name / "filtered_feature_bc_matrix"
    write_10x_mtx(path, c.X, c.barcodes, c.gene_ids, c.genes)
    return path, {}


def _mtx_v2(folder: Path, name: str, c: Counts) -> tuple[Path, dict[str, str]]:
    path = folder / name / "filtered_gene_bc_matrices" / "GRCh38"
    write_10x_mtx(path, c.X, c.barcodes, c.gene_ids, c.genes, version=2)
    return path, {}


def _starsolo(folder: Path, name: str, c: Counts) -> tuple[Path, dict[str, str]]:
    filtered = folder / name / "Solo.out" / "Gene" / "filtered"
    write_10x_mtx(filtered, c.X, c.barcodes, c.gene_ids, c.genes, compress=False)
    return folder / name / "Solo.out", {}


def _geo_trio(folder: Path, name: str, c: Counts) -> tuple[Path, dict[str, str]]:
    files = write_10x_mtx(folder / f"{name}_", c.X, c.barcodes, c.gene_ids, c.genes)
    return files["matrix"], {}


def _h5ad_layer(folder: Path, name: str, c: Counts) -> tuple[Path, dict[str, str]]:
    """A collaborator's analysed file: X normalised, the raw counts in a layer."""
    path = folder / f"{name}.h5ad"
    adata = _analysed(c)
    adata.layers["raw_counts"] = c.X.astype(np.float32)
    adata.write_h5ad(path)
    return path, {"counts_layer": "raw_counts"}


def _h5ad_raw(folder: Path, name: str, c: Counts) -> tuple[Path, dict[str, str]]:
    """A collaborator's analysed file: X normalised, the raw counts in ``raw``."""
    path = folder / f"{name}.h5ad"
    adata = _analysed(c)
    adata.raw = ad.AnnData(X=c.X.astype(np.float32), var=adata.var[[]])
    adata.write_h5ad(path)
    return path, {}


def _analysed(c: Counts) -> ad.AnnData:
    """X log-normalised (not counts) and a cell annotation, as after a scanpy analysis."""
    X = c.X.astype(np.float32).tocsr()
    totals = np.asarray(X.sum(axis=1)).ravel()
    X = sp.diags(1e4 / np.maximum(totals, 1)).dot(X).tocsr()
    X.data = np.log1p(X.data)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(np.where(totals > np.median(totals), "high", "low"))},
        index=pd.Index(c.barcodes, dtype=object),
    )
    var = pd.DataFrame(
        {"gene_ids": c.gene_ids}, index=pd.Index(unique_gene_names(c.genes), dtype=object)
    )
    return ad.AnnData(X=X, obs=obs, var=var)


#: Every layout the demo study has, in samplesheet order: (sample name, writer).
LAYOUT_SAMPLES: tuple[tuple[str, Writer], ...] = (
    ("geo_csv", _geo_csv),
    ("plain_tsv", _tsv),
    ("cells_as_rows", _cells_as_rows),
    ("cellranger_h5", _cellranger_h5),
    ("cellranger2_h5", _cellranger2_h5),
    ("mtx_v3", _mtx_v3),
    ("mtx_v2", _mtx_v2),
    ("starsolo", _starsolo),
    ("geo_trio", _geo_trio),
    ("h5ad_layer", _h5ad_layer),
    ("h5ad_raw", _h5ad_raw),
)


def demo_gene_ids(n: int) -> list[str]:
    """Ensembl-like ids for the demo genes (``ENSG00000000001``...)."""
    return [f"ENSG{i:011d}" for i in range(1, n + 1)]


def demo_counts(sample_index: int, *, scale: float = 1.0, seed: int = 0) -> Counts:
    """The counts of the demo series' sample ``sample_index`` (cycling through the 12)."""
    templates = demo_samples()
    n_cells = max(1, round(templates[sample_index % len(templates)].n_cells * scale))
    X, barcodes = simulate_counts(sample_index, n_cells, seed=seed)
    genes = demo_gene_symbols()
    return Counts(sp.csr_matrix(X), list(barcodes), genes, demo_gene_ids(len(genes)))


def write_layout_study(
    folder: str | os.PathLike[str],
    *,
    scale: float = 1.0,
    seed: int = 0,
    layouts: tuple[str, ...] | None = None,
) -> Path:
    """Write the demo study, one sample per layout, and its ``samplesheet.csv``.

    Parameters
    ----------
    folder
        Where the inputs and the samplesheet go (created if missing).
    scale
        Cells per sample as a fraction of the series' (~9,000 at 1.0).
    seed
        Series seed (see :func:`~sc_assets.core.demo.simulate_counts`).
    layouts
        Sample names of :data:`LAYOUT_SAMPLES` to write; all when None.

    Returns
    -------
    The samplesheet: columns ``sample, path, format, orientation, counts_layer, genome,
    condition, donor, layout``, paths relative to ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    chosen = [(n, w) for n, w in LAYOUT_SAMPLES if layouts is None or n in layouts]
    for index, (name, writer) in enumerate(chosen):
        counts = demo_counts(index, scale=scale, seed=seed)
        path, options = writer(folder, name, counts)
        template = demo_samples()[index % len(demo_samples())]
        rows.append(
            {
                "sample": name,
                "path": path.relative_to(folder).as_posix(),
                **{column: options.get(column, "") for column in SHEET_COLUMNS[2:]},
                "condition": template.name.condition,
                "donor": f"D{template.name.donor}",
                "layout": name,
            }
        )
    sheet = folder / "samplesheet.csv"
    with open(sheet, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*SHEET_COLUMNS, "condition", "donor", "layout"])
        writer.writeheader()
        writer.writerows(rows)
    return sheet
