"""``sc-assets`` end to end, as a user runs it: real processes, a persistent SQLite instance."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pytest

from sc_assets.core import parse_sample_name


def sc_assets(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sc_assets.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project folder; the CLI's defaults (data/, storage/, .dagster_home/) live here."""
    for name in ["DAGSTER_HOME", "SC_ASSETS_DATA_DIR", "SC_ASSETS_STORAGE_DIR"]:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_demo_data_writes_the_geo_series(project):
    result = sc_assets("demo-data", "data", "--scale", "0.01", "--samples", "13", cwd=project)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (project / "data").iterdir())
    assert len(names) == 13
    assert names[0] == "GSM5320459_Ctrl1_count_matrix.csv.gz"
    assert "GSM5320470_Post4_count_matrix.csv.gz" in names
    assert [parse_sample_name(n).sample for n in names][:4] == ["Ctrl1", "Ctrl2", "Ctrl3", "Ctrl4"]
    with gzip.open(project / "data" / names[0], "rt") as f:
        header = f.readline().rstrip("\n").split(",")
    assert header[0] == "" and len(header) == 1 + round(9413 * 0.01)
    assert header[1].endswith("-1") and len(header[1]) == 18


def test_ingest_then_a_bad_file_then_report(project):
    assert (
        sc_assets("demo-data", "data", "--scale", "0.012", "--samples", "3", cwd=project).returncode
        == 0
    )
    first = sc_assets("ingest", cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].split() == ["sample", "cells", "genes", "sparsity", "median", "UMIs", "status"]
    assert [line.split()[0] for line in lines[1:5]] == [
        "GSM5320459_Ctrl1",
        "GSM5320460_Ctrl2",
        "GSM5320461_Ctrl3",
        "merged_adata",
    ]
    assert all(line.rstrip().endswith("ok") for line in lines[1:5])
    assert (project / ".dagster_home" / "dagster.yaml").exists()
    merged_path = project / "storage" / "merged_adata.h5ad"
    merged = ad.read_h5ad(merged_path)
    parts = [ad.read_h5ad(p) for p in sorted((project / "storage" / "sample_adata").iterdir())]
    assert merged.n_obs == sum(p.n_obs for p in parts) == int(lines[4].split()[1])
    good_merge = merged_path.read_bytes()

    # a truncated file and a junk name land in the folder
    good = (project / "data" / "GSM5320461_Ctrl3_count_matrix.csv.gz").read_bytes()
    (project / "data" / "GSM5320462_Ctrl4_count_matrix.csv.gz").write_bytes(good[: len(good) // 2])
    (project / "data" / "notes.txt").write_text("not a sample")
    second = sc_assets("ingest", "--workers", "1", cwd=project)
    assert second.returncode == 1
    out = second.stdout
    assert "GSM5320462_Ctrl4" in out and "ERROR: " in out
    assert "GSM5320462_Ctrl4_count_matrix.csv.gz" in out  # the error names the file
    assert "merged_adata not built: 1 of 4 samples cannot enter the merge" in out
    assert "ignored notes.txt" in out
    assert merged_path.read_bytes() == good_merge  # the last good merge is untouched
    assert not (project / "storage" / "sample_adata" / "GSM5320462_Ctrl4.h5ad").exists()

    report = sc_assets("report", "--out", "reports", cwd=project)
    assert report.returncode == 1, report.stderr
    markdown = (project / "reports" / "report.md").read_text()
    assert "GSM5320462_Ctrl4: latest run failed:" in markdown
    assert "![QC plots of GSM5320459_Ctrl1](plots/GSM5320459_Ctrl1.png)" in markdown
    assert (project / "reports" / "plots" / "GSM5320459_Ctrl1.png").stat().st_size > 1000
    assert "data:image/png;base64," in (project / "reports" / "report.html").read_text()

    # removing the bad file drops its never-materialized partition: the merge is rebuilt
    (project / "data" / "GSM5320462_Ctrl4_count_matrix.csv.gz").unlink()
    third = sc_assets("ingest", "--workers", "1", cwd=project)
    assert third.returncode == 0, third.stdout
    assert "GSM5320462_Ctrl4: source file is gone; partition dropped" in third.stdout
    assert sc_assets("report", "--out", "reports", cwd=project).returncode == 0


def test_ingest_names_a_missing_data_folder(project):
    result = sc_assets("ingest", "--data-dir", "nowhere", cwd=project)
    assert result.returncode == 2
    assert "nowhere: the data folder does not exist" in result.stderr
