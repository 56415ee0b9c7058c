"""Per-sample annotation: sample metadata, mitochondrial flags, QC metrics."""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

MT_PREFIX = "MT-"
COUNTS_LAYER = "counts"
#: The obs columns :func:`qc_metrics` writes (a samplesheet may not use these names).
OBS_QC_COLUMNS = ("n_genes_by_counts", "total_counts", "total_counts_mt", "pct_counts_mt")


@dataclass(frozen=True)
class CountSums:
    """Sums over the counts that QC metrics are made of.

    "Flagged" genes are the mitochondrial ones (``MT-``), or none.

    Attributes
    ----------
    cell_nnz, cell_total, cell_flagged_total
        Per cell (int64): genes with a non-zero count, total count, total over flagged genes.
    gene_nnz, gene_total, gene_flagged
        Per gene: cells with a non-zero count and total count (int64), and whether it is
        flagged (bool).
    """

    cell_nnz: np.ndarray
    cell_total: np.ndarray
    cell_flagged_total: np.ndarray
    gene_nnz: np.ndarray
    gene_total: np.ndarray
    gene_flagged: np.ndarray


def csr_sums(X: sp.csr_matrix, flagged: np.ndarray) -> CountSums:
    """The :class:`CountSums` of a canonical CSR count matrix (cells x genes).

    ``flagged`` marks the genes summed on their own per cell (``var["mt"]``). Counts are whole
    numbers, so the float64 accumulations are exact and converted to int64.
    """
    n_cells, n_genes = X.shape
    indptr, indices, data = X.indptr, X.indices, X.data
    cell_nnz = np.diff(indptr).astype(np.int64)
    cell_total = _row_sums(indptr, data, cell_nnz)
    if flagged.any():
        cell_flagged = _row_sums(indptr, np.where(flagged[indices], data, 0), cell_nnz)
    else:
        cell_flagged = np.zeros(n_cells, dtype=np.int64)
    gene_nnz = np.bincount(indices, minlength=n_genes).astype(np.int64)
    gene_total = np.rint(np.bincount(indices, weights=data, minlength=n_genes)).astype(np.int64)
    return CountSums(cell_nnz, cell_total, cell_flagged, gene_nnz, gene_total, flagged.copy())


def _row_sums(indptr: np.ndarray, values: np.ndarray, row_nnz: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return np.zeros(row_nnz.size, dtype=np.int64)
    # reduceat gives values[start] for an empty row: those are set to 0 after.
    starts = np.minimum(indptr[:-1], values.size - 1)
    sums = np.add.reduceat(values, starts, dtype=np.float64)
    sums[row_nnz == 0] = 0
    return np.rint(sums).astype(np.int64)


def qc_metrics(sums: CountSums) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The obs and var columns of ``sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"],
    percent_top=None, log1p=False)``, from the parser's sums, in scanpy's order and dtypes.

    obs: ``n_genes_by_counts`` (int32), ``total_counts``, ``total_counts_mt``,
    ``pct_counts_mt`` (float32; 0, not NaN, for a cell without counts); var:
    ``n_cells_by_counts`` (int64), ``mean_counts``, ``pct_dropout_by_counts`` (float64),
    ``total_counts`` (float32).

    Scanpy would take three more passes over the matrix (0.13 s for a 9,400-cell sample,
    more than half of what decompressing the file costs); the parser gets the same numbers
    while each count is in a register. Equal to scanpy's as long as a count and a cell's
    total stay below 2**24 (float32 holds such integers exactly; above, these are the exact
    sums rounded once). ``sc_assets_tests/core/test_qc.py`` checks them against scanpy.
    """
    n_obs = sums.cell_nnz.size
    total = sums.cell_total.astype(np.float32)
    total_mt = sums.cell_flagged_total.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct_mt = total_mt / total * 100
    pct_mt[total == 0] = 0.0
    obs = {
        "n_genes_by_counts": sums.cell_nnz.astype(np.int32),
        "total_counts": total,
        "total_counts_mt": total_mt,
        "pct_counts_mt": pct_mt,
    }
    var = {
        "n_cells_by_counts": sums.gene_nnz.astype(np.int64),
        "mean_counts": sums.gene_total.astype(np.float64) / n_obs,
        "pct_dropout_by_counts": (1 - sums.gene_nnz / n_obs) * 100,
        "total_counts": sums.gene_total.astype(np.float32),
    }
    return obs, var


def adata_summary(adata: ad.AnnData) -> dict[str, int | float]:
    """The numbers that describe a count matrix at a glance.

    ``n_obs``, ``n_vars``, ``nnz`` (stored values of ``X``), ``sparsity`` (fraction of zeros)
    and ``median_total_counts`` (median UMIs per cell).
    """
    size = adata.n_obs * adata.n_vars
    nnz = int(adata.X.nnz) if hasattr(adata.X, "nnz") else int(np.count_nonzero(adata.X))
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    return {
        "n_obs": adata.n_obs,
        "n_vars": adata.n_vars,
        "nnz": nnz,
        "sparsity": round(1.0 - nnz / size, 6) if size else 1.0,
        "median_total_counts": float(np.median(totals)) if totals.size else 0.0,
    }
