"""Real Cell Ranger data (scanpy's chr21 test matrix) through the whole platform, exactly."""

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

from sc_assets.core.count_matrix_writer import write_count_matrix
from sc_assets.core.genes import read_features_file
from sc_assets.definitions import build_definitions
from sc_assets.settings import Settings
from sc_assets_tests.conftest import Platform, ingest

# The shared fixtures sit next to the checkout (../shared); SC_ASSETS_10X_FIXTURES overrides.
FIXTURE = (
    Path(
        os.environ.get("SC_ASSETS_10X_FIXTURES")
        or Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "10x"
    )
    / "v3"
)
MTX_DIR = FIXTURE / "filtered_feature_bc_matrix"
KEYS = ["GSM1000001_Ctrl1", "GSM1000002_Pre1", "GSM1000003_Post1"]

pytestmark = pytest.mark.skipif(
    not MTX_DIR.is_dir(), reason=f"real 10x fixtures not found at {MTX_DIR}"
)


@pytest.fixture(scope="module")
def reference() -> ad.AnnData:
    return sc.read_10x_mtx(MTX_DIR, var_names="gene_symbols", make_unique=True)


def split_into_geo_files(reference: ad.AnnData, data_dir: Path) -> list[ad.AnnData]:
    """Three consecutive slices of the real cells, written in the GSE174609 layout."""
    raw = sc.read_10x_mtx(MTX_DIR, var_names="gene_symbols", make_unique=False)
    bounds = np.linspace(0, raw.n_obs, len(KEYS) + 1).astype(int)
    parts = []
    for key, start, stop in zip(KEYS, bounds[:-1], bounds[1:], strict=True):
        part = raw[start:stop]
        write_count_matrix(
            data_dir / f"{key}_count_matrix.csv.gz",
            part.X,
            list(part.var_names),
            list(part.obs_names),
        )
        parts.append(reference[start:stop])
    return parts


@pytest.mark.parametrize("pin_from", ["first sample", "features file"])
def test_real_counts_survive_exactly(settings, instance, reference, monkeypatch, pin_from):
    if pin_from == "features file":
        monkeypatch.setenv("SC_ASSETS_REFERENCE_GENES", str(MTX_DIR / "features.tsv.gz"))
    platform = Platform(settings, build_definitions(Settings.from_env()), instance)
    parts = split_into_geo_files(reference, settings.data_dir)
    samples, merge = ingest(platform, KEYS)

    for key, expected in zip(KEYS, parts, strict=True):
        assert samples[key].success
        checks = {e.check_name: e.passed for e in samples[key].get_asset_check_evaluations()}
        # chr21 has no MT- genes: a warning, everything else passes
        assert checks == {
            "cell_count": True,
            "gene_set": True,
            "sparsity": True,
            "count_integrity": True,
            "empty_cells": True,
            "mt_genes": False,
        }
        adata = ad.read_h5ad(Path(settings.storage_dir, "sample_adata", f"{key}.h5ad"))
        assert list(adata.obs_names) == list(expected.obs_names)
        assert list(adata.var_names) == list(reference.var_names)
        assert (adata.X != expected.X).nnz == 0
        assert (adata.layers["counts"] != expected.X).nnz == 0
        assert (adata.obs["pct_counts_mt"] == 0).all()  # 0, not NaN, without MT- genes

    assert merge.success
    merged = ad.read_h5ad(Path(settings.storage_dir, "merged_adata.h5ad"))
    assert merged.n_obs == reference.n_obs == 1107
    assert (merged.X != reference.X).nnz == 0
    assert list(merged.obs_names) == [
        f"{key.split('_')[1]}-{barcode}"
        for key, part in zip(KEYS, parts, strict=True)
        for barcode in part.obs_names
    ]


def test_features_file_gives_the_scanpy_gene_names(reference):
    assert read_features_file(MTX_DIR / "features.tsv.gz") == list(reference.var_names)
