"""QC metrics from the parser's sums equal scanpy's calculate_qc_metrics, exactly."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse

from sc_assets.core.count_matrix_writer import write_count_matrix
from sc_assets.core.demo import demo_gene_symbols, simulate_counts
from sc_assets.core.readers import read_count_matrix

OBS_QC = ["n_genes_by_counts", "total_counts", "total_counts_mt", "pct_counts_mt"]
VAR_QC = ["mt", "n_cells_by_counts", "mean_counts", "pct_dropout_by_counts", "total_counts"]


def scanpy_qc(adata: ad.AnnData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the tutorial does: flag MT- genes on the var names, then calculate_qc_metrics."""
    fresh = ad.AnnData(X=adata.X.copy(), obs=adata.obs[[]], var=adata.var[[]])
    fresh.var["mt"] = fresh.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(fresh, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    fresh.obs["pct_counts_mt"] = fresh.obs["pct_counts_mt"].fillna(0.0)
    return fresh.obs, fresh.var


def assert_same_qc(adata: ad.AnnData) -> None:
    obs, var = scanpy_qc(adata)
    pd.testing.assert_frame_equal(adata.obs[OBS_QC], obs[OBS_QC], check_exact=True)
    pd.testing.assert_frame_equal(adata.var[VAR_QC], var[VAR_QC], check_exact=True)


def test_demo_sample_qc_equals_scanpy(tmp_path: Path) -> None:
    genes = demo_gene_symbols()
    counts, barcodes = simulate_counts(0, 300, seed=3)  # cells x genes, with 13 MT- genes
    # an empty cell (pct_counts_mt 0, not NaN) and genes no cell expresses
    counts = scipy.sparse.vstack([counts, scipy.sparse.csr_matrix((1, counts.shape[1]))]).tocsr()
    barcodes = [*barcodes, "TTTTTTTTTTTTTTTT-1"]
    path = write_count_matrix(tmp_path / "GSM1_Ctrl1_count_matrix.csv.gz", counts, genes, barcodes)
    adata = read_count_matrix(path)
    assert int(adata.var["mt"].sum()) == 13
    assert adata.obs["pct_counts_mt"].iloc[-1] == 0.0
    assert (adata.var["n_cells_by_counts"] == 0).any()
    assert_same_qc(adata)


@pytest.mark.parametrize("mt", [False, True], ids=["no MT- genes", "with MT- genes"])
def test_random_matrix_qc_equals_scanpy(tmp_path: Path, mt: bool) -> None:
    rng = np.random.default_rng(7)
    values = lambda n: rng.integers(1, 500, n)  # noqa: E731
    counts = scipy.sparse.random(57, 40, density=0.2, format="csr", rng=rng, data_rvs=values)
    genes = [f"MT-G{i}" if mt and i % 5 == 0 else f"G{i}" for i in range(40)]
    barcodes = [f"AAAC{i:04d}-1" for i in range(57)]
    path = write_count_matrix(tmp_path / "GSM1_Ctrl1_count_matrix.csv.gz", counts, genes, barcodes)
    adata = read_count_matrix(path)
    assert int(adata.var["mt"].sum()) == (8 if mt else 0)
    assert_same_qc(adata)
