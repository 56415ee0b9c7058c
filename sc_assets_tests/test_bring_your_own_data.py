"""A samplesheet naming one sample in every layout, ingested by the CLI as a user runs it."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from dagster import DagsterInstance

from sc_assets.core.demo_layouts import LAYOUT_SAMPLES, demo_counts, write_layout_study
from sc_assets.core.genes import unique_gene_names
from sc_assets_tests.conftest import run_cli

SCALE = 0.014  # 110-130 cells per sample: above the 100-cell minimum, quick to ingest
LAYOUTS = [name for name, _ in LAYOUT_SAMPLES]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("project")
    write_layout_study(folder / "inputs", scale=SCALE)
    return folder


@pytest.fixture(scope="module")
def ingested(study: Path) -> subprocess.CompletedProcess:
    return run_cli("ingest", "--samplesheet", "inputs/samplesheet.csv", "--workers", "2", cwd=study)


def expected_counts(index: int) -> sp.csr_matrix:
    return sp.csr_matrix(demo_counts(index, scale=SCALE).X, dtype=np.float32)


def test_every_layout_ingests_and_merges(ingested: subprocess.CompletedProcess) -> None:
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    rows = {line.split()[0]: line for line in ingested.stdout.splitlines()[1:]}
    assert sorted(k for k in rows if k != "merged_adata") == sorted(LAYOUTS)
    assert all(rows[name].rstrip().endswith(("ok", ")")) for name in rows), ingested.stdout


@pytest.mark.parametrize("index", range(len(LAYOUTS)), ids=LAYOUTS)
def test_sample_files_hold_the_source_counts_and_the_sheet_metadata(
    study: Path, ingested: subprocess.CompletedProcess, index: int
) -> None:
    name = LAYOUTS[index]
    adata = ad.read_h5ad(study / "storage" / "sample_adata" / f"{name}.h5ad")
    source = demo_counts(index, scale=SCALE)
    expected = expected_counts(index)
    for matrix in (adata.X, adata.layers["counts"]):
        assert matrix.dtype == np.float32 and matrix.format == "csr"
        assert (matrix != expected).nnz == 0
    assert list(adata.obs_names) == source.barcodes
    assert list(adata.var_names) == unique_gene_names(source.genes)
    with open(study / "inputs" / "samplesheet.csv", newline="") as f:
        sheet = {row["sample"]: row for row in csv.DictReader(f)}
    for column in ("condition", "donor", "layout"):
        assert isinstance(adata.obs[column].dtype, pd.CategoricalDtype)
        assert set(adata.obs[column]) == {sheet[name][column]}
    assert set(adata.obs["sample"]) == {name}
    if name.startswith("h5ad"):  # the collaborator's own cell annotations are kept
        assert set(adata.obs["cell_type"]) == {"high", "low"}


def test_the_merge_is_every_sample_in_key_order(
    study: Path, ingested: subprocess.CompletedProcess
) -> None:
    merged = ad.read_h5ad(study / "storage" / "merged_adata.h5ad")
    order = sorted(range(len(LAYOUTS)), key=lambda i: LAYOUTS[i])
    expected = sp.vstack([expected_counts(i) for i in order]).tocsr()
    for matrix in (merged.X, merged.layers["counts"]):
        assert (matrix != expected).nnz == 0
    names = [f"{LAYOUTS[i]}-{b}" for i in order for b in demo_counts(i, scale=SCALE).barcodes]
    assert list(merged.obs_names) == names
    assert list(merged.obs["sample"].cat.categories) == sorted(LAYOUTS)
    assert merged.obs["layout"].astype(str).tolist() == [n.split("-")[0] for n in names]
    assert "cell_type" not in merged.obs  # only two samples have it: inner join, as ad.concat


def test_a_bad_samplesheet_is_refused_whole_and_nothing_is_written(tmp_path: Path) -> None:
    write_layout_study(tmp_path / "inputs", scale=SCALE, layouts=("geo_csv", "cellranger_h5"))
    sheet = tmp_path / "inputs" / "samplesheet.csv"
    lines = sheet.read_text().splitlines()
    lines.append("geo_csv,missing.h5,,,,,Ctrl,D9,x")  # a repeated name and a missing file
    lines.append("bad name,geo_csv.csv.gz,h5,,,,Ctrl,D9,x")
    sheet.write_text("\n".join(lines) + "\n")
    result = run_cli("ingest", "--samplesheet", str(sheet), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "samplesheet.csv, line 4, column sample:" in result.stderr
    assert "samplesheet.csv, line 4, column path:" in result.stderr
    assert "samplesheet.csv, line 5, column sample:" in result.stderr
    assert "samplesheet.csv, line 5, column format:" in result.stderr
    assert not (tmp_path / "storage").exists()
    with DagsterInstance.from_config(str(tmp_path / ".dagster_home")) as instance:
        assert instance.get_dynamic_partitions("samples") == []
        assert instance.get_runs() == []

    checked = run_cli("validate-samplesheet", str(sheet), cwd=tmp_path)
    assert checked.returncode == 1 and checked.stderr == result.stderr.split("\n", 1)[1]
    sheet.write_text("\n".join(lines[:3]) + "\n")
    valid = run_cli("validate-samplesheet", str(sheet), cwd=tmp_path)
    assert valid.returncode == 0, valid.stderr
    assert "valid, 2 samples" in valid.stdout
