"""Read one per-sample count-matrix file into an annotated AnnData."""

from __future__ import annotations

import os

import anndata as ad

from sc_assets.core._csv_parser import ParsedCountMatrix, parse_count_matrix, warm_up
from sc_assets.core.genes import unique_gene_names
from sc_assets.core.names import SampleName, parse_sample_name
from sc_assets.core.qc import COUNTS_LAYER, MT_PREFIX, sample_frames

__all__ = ["read_count_matrix", "sample_adata", "warm_up"]


def read_count_matrix(path: str | os.PathLike[str]) -> ad.AnnData:
    """Read a GEO per-sample count matrix (genes x cells, gzipped CSV) as cells x genes AnnData.

    Parameters
    ----------
    path
        A file named like ``GSM5320459_Ctrl1_count_matrix.csv.gz``: header row of cell
        barcodes, one row per gene, non-negative integer counts.

    Returns
    -------
    AnnData with ``X`` a CSR float32 matrix of the raw counts (int32 indices), ``obs_names`` the
    barcodes, ``var_names`` the gene symbols made unique (a repeated symbol gets ``-1``,
    ``-2``... in file order, as ``AnnData.var_names_make_unique`` does), sample metadata and QC
    metrics in ``obs``, ``var["mt"]`` and ``layers["counts"]`` (see
    :func:`~sc_assets.core.qc.sample_frames`).

    Raises
    ------
    SampleNameError
        If the file name does not follow the GEO naming convention.
    CountMatrixError
        If the file is not a well-formed matrix of non-negative integer counts; the message
        names the file, the line and the problem.
    """
    sample = parse_sample_name(path)
    return sample_adata(parse_count_matrix(path, flag_prefix=MT_PREFIX, with_copy=True), sample)


def sample_adata(parsed: ParsedCountMatrix, sample: SampleName) -> ad.AnnData:
    """The annotated AnnData of a parsed file (the second half of :func:`read_count_matrix`).

    ``parsed`` comes from ``parse_count_matrix(path, flag_prefix=MT_PREFIX, with_copy=True)``.
    """
    obs, var = sample_frames(parsed.barcodes, unique_gene_names(parsed.genes), sample, parsed.sums)
    adata = ad.AnnData(X=parsed.X, obs=obs, var=var)
    adata.layers[COUNTS_LAYER] = parsed.X_copy if parsed.X_copy is not None else parsed.X.copy()
    return adata
