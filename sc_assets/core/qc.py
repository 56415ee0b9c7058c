"""Per-sample annotation: sample metadata, mitochondrial flags, QC metrics, raw-count layer."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from sc_assets.core.names import SampleName

MT_PREFIX = "MT-"
COUNTS_LAYER = "counts"
OBS_METADATA_COLUMNS = ("sample_id", "condition", "donor", "sample")


def annotate_sample(adata: ad.AnnData, sample: SampleName) -> ad.AnnData:
    """Add sample metadata, ``var["mt"]``, scanpy QC metrics and ``layers["counts"]``, in place.

    Parameters
    ----------
    adata
        Cells x genes raw counts in ``X`` with unique ``var_names``.
    sample
        Metadata parsed from the file name.

    Returns
    -------
    The same object, with obs ``sample_id``, ``condition`` (categorical), ``donor`` (int),
    ``sample`` and scanpy's ``calculate_qc_metrics`` columns (``total_counts``,
    ``n_genes_by_counts``, ``total_counts_mt``, ``pct_counts_mt``; ``pct_counts_mt`` is 0, not
    NaN, for a cell without counts or a sample without ``MT-`` genes), var ``mt`` and QC columns,
    and ``layers["counts"]`` a copy of the raw counts.
    """
    # scanpy is imported here, not at module level: it costs ~2 s and 0.25 GB, and the names,
    # validation and merge modules of the core are used by processes that never need it.
    import scanpy as sc

    n = adata.n_obs
    adata.obs["sample_id"] = np.full(n, sample.sample_id, dtype=object)
    adata.obs["condition"] = pd.Categorical([sample.condition] * n)
    adata.obs["donor"] = np.full(n, sample.donor, dtype=np.int64)
    adata.obs["sample"] = np.full(n, sample.sample, dtype=object)

    adata.var["mt"] = adata.var_names.str.startswith(MT_PREFIX)
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    adata.obs["pct_counts_mt"] = adata.obs["pct_counts_mt"].fillna(0.0)
    adata.layers[COUNTS_LAYER] = adata.X.copy()
    return adata


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
