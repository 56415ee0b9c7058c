"""QC metrics equal scanpy's calculate_qc_metrics, exactly, from the parser's sums or csr_sums."""

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
from sc_assets.core.qc import CountSums, csr_sums
from sc_assets.core.readers import read_count_matrix
from sc_assets.core.tenx_writers import write_10x_h5, write_10x_mtx

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


def write_every_layout(
    folder: Path, counts: scipy.sparse.csr_matrix, genes, barcodes
) -> list[Path]:
    """``counts`` as a 10x HDF5 file, a 10x MTX folder and an .h5ad (counts layer and X)."""
    ids = [f"ENSG{i:05d}" for i in range(len(genes))]
    write_10x_h5(folder / "m.h5", counts, barcodes, ids, genes)
    write_10x_mtx(folder / "mtx", counts, barcodes, ids, genes)
    var = pd.DataFrame({"gene_ids": ids}, index=genes)
    X = counts.astype(np.float32)
    ad.AnnData(X=X, obs=pd.DataFrame(index=barcodes), var=var).write_h5ad(folder / "x.h5ad")
    layer = ad.AnnData(X=X * 0.5, obs=pd.DataFrame(index=barcodes), var=var, layers={"counts": X})
    layer.write_h5ad(folder / "layer.h5ad")
    return [folder / "m.h5", folder / "mtx", folder / "x.h5ad", folder / "layer.h5ad"]


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_every_layout_qc_equals_scanpy(tmp_path: Path) -> None:
    """The readers other than the text parser take no sums of their own: counts_adata does."""
    genes = demo_gene_symbols()
    counts, barcodes = simulate_counts(0, 200, seed=5)
    counts = scipy.sparse.vstack([counts, scipy.sparse.csr_matrix((1, counts.shape[1]))]).tocsr()
    barcodes = [*barcodes, "TTTTTTTTTTTTTTTT-1"]
    for path in write_every_layout(tmp_path, counts, genes, barcodes):
        adata = read_count_matrix(path)
        assert int(adata.var["mt"].sum()) == 13, path
        assert_same_qc(adata)


def exact_sums(X: scipy.sparse.csr_matrix, flagged: np.ndarray) -> CountSums:
    """The sums in int64 arithmetic, the slow obvious way."""
    whole = X.astype(np.int64)
    return CountSums(
        cell_nnz=np.diff(X.indptr).astype(np.int64),
        cell_total=np.asarray(whole.sum(axis=1)).ravel(),
        cell_flagged_total=np.asarray(whole[:, flagged].sum(axis=1)).ravel(),
        gene_nnz=np.bincount(X.indices, minlength=X.shape[1]).astype(np.int64),
        gene_total=np.asarray(whole.sum(axis=0)).ravel(),
        gene_flagged=flagged,
    )


@pytest.mark.parametrize(
    "shape", [(7, 6), (0, 4), (3, 0), (1500, 3000)], ids=["small", "no cells", "no genes", "big"]
)
def test_csr_sums_are_exact_beyond_float32(shape: tuple[int, int]) -> None:
    """Sums above 2**24 (where float32 accumulations drift) are exact; "big" is summed by
    several threads (more than 2**20 values)."""
    rng = np.random.default_rng(11)
    density = 0.3 if shape[0] * shape[1] else 0.0
    X = scipy.sparse.random(*shape, density=density, format="csr", rng=rng, dtype=np.float32)
    X.data = np.floor(X.data * 50)
    if X.nnz:
        # exact in float32; five make more than 2**24: the first cell's, and the second gene's
        X.data[:5] = X.data[X.indices == 1] = 8_000_001
    X.eliminate_zeros()
    flagged = np.arange(shape[1]) % 7 == 0
    sums = csr_sums(X, flagged)
    expected = exact_sums(X, flagged)
    for field in CountSums.__dataclass_fields__:
        found, wanted = getattr(sums, field), getattr(expected, field)
        assert found.dtype == wanted.dtype and np.array_equal(found, wanted), field
    if shape == (1500, 3000):
        assert X.nnz > 2**20 and sums.cell_total[0] > 2**24 < sums.gene_total[1]
