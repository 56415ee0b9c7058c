"""The asset graph end to end on a real SQLite instance: files in, checked .h5ad files out."""

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

from sc_assets_tests.conftest import copy_samples, ingest, pandas_reference

KEYS = ["GSM5320459_Ctrl1", "GSM5320460_Ctrl2", "GSM5320461_Ctrl3"]


@pytest.fixture(scope="module")
def ingested(module_platform, demo_files):
    copy_samples(demo_files, module_platform.settings.data_dir, KEYS)
    samples, merge = ingest(module_platform, KEYS)
    return samples, merge, module_platform.settings


def test_samples_hold_exactly_the_csv_counts(ingested, demo_files):
    samples, _, settings = ingested
    for key in KEYS:
        assert samples[key].success
        adata = ad.read_h5ad(settings.storage_dir + f"/sample_adata/{key}.h5ad")
        X, barcodes, genes = pandas_reference(demo_files[key])
        assert adata.X.format == "csr" and adata.X.dtype == np.float32
        assert adata.X.indices.dtype == np.int32
        assert (adata.X != X).nnz == 0
        assert (adata.layers["counts"] != X).nnz == 0
        assert list(adata.obs_names) == barcodes
        # duplicated symbols are made unique the anndata way, nothing else changes
        assert [g.split("-")[0] for g in adata.var_names if g.startswith("TBCE")] == ["TBCE"] * 2
        assert adata.var_names.is_unique and len(adata.var_names) == len(genes) == 33_538
        assert int(adata.var["mt"].sum()) == 13
        sample_id, label = key.split("_")
        assert set(adata.obs["sample_id"]) == {sample_id} and set(adata.obs["sample"]) == {label}
        assert adata.obs["condition"].dtype == "category"
        assert adata.obs["donor"].dtype == np.int64
        np.testing.assert_array_equal(adata.obs["total_counts"], np.asarray(X.sum(axis=1)).ravel())
        assert (adata.obs["pct_counts_mt"] > 0).all()


def test_materialization_metadata_and_checks(ingested):
    samples, _, settings = ingested
    result = samples[KEYS[0]]
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    path = f"{settings.storage_dir}/sample_adata/{KEYS[0]}.h5ad"
    assert metadata["path"].value == path
    assert metadata["n_vars"].value == 33_538
    assert 0.9 < metadata["sparsity"].value < 0.97
    assert 3_000 < metadata["median_total_counts"].value < 9_000
    assert metadata["qc_plots"].value.startswith("![QC plots](data:image/png;base64,")
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert sorted(evaluations) == sorted(
        ["cell_count", "gene_set", "sparsity", "count_integrity", "empty_cells", "mt_genes"]
    )
    assert all(e.passed for e in evaluations.values())
    assert {e.partition for e in evaluations.values()} == {KEYS[0]}


def test_merged_concatenates_every_sample_with_counts(ingested):
    samples, merge, settings = ingested
    assert merge.success
    merged = ad.read_h5ad(settings.storage_dir + "/merged_adata.h5ad")
    parts = [ad.read_h5ad(settings.storage_dir + f"/sample_adata/{k}.h5ad") for k in KEYS]
    assert merged.n_obs == sum(p.n_obs for p in parts)
    assert merged.obs_names.is_unique
    assert merged.obs_names[0] == "Ctrl1-" + parts[0].obs_names[0]
    assert list(merged.obs["sample"].cat.categories) == ["Ctrl1", "Ctrl2", "Ctrl3"]
    assert list(merged.var_names) == list(parts[0].var_names)
    assert merged.var["mt"].sum() == 13
    assert (merged.layers["counts"] != merged.X).nnz == 0
    expected = ad.concat(parts, join="inner", merge="same")
    assert (merged.X != expected.X).nnz == 0
    assert merged.X.dtype == np.float32 and merged.X.indices.dtype == np.int32
    evaluations = {e.check_name: e for e in merge.get_asset_check_evaluations()}
    assert all(e.passed for e in evaluations.values()), evaluations
    assert evaluations["cell_count"].metadata["n_cells"].value == merged.n_obs
    # scanpy works on it as on any AnnData
    sc.pp.normalize_total(merged)
    sc.pp.log1p(merged)
    assert merged.layers["counts"].max() >= 1


def test_reference_genes_are_pinned_from_the_first_sample(ingested):
    _, _, settings = ingested
    genes = Path(settings.storage_dir, "reference_genes.txt").read_text().splitlines()
    first = ad.read_h5ad(settings.storage_dir + f"/sample_adata/{KEYS[0]}.h5ad")
    assert genes == list(first.var_names)
