"""The README's paths as a new user walks them (issue 19): the CLI in a subprocess, in a fresh
folder. Each either does what the README says or refuses at once with one line and exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

from sc_assets.dagster_home import POSTGRES_DAGSTER_YAML, SQLITE_DAGSTER_YAML
from sc_assets.sensors import run_slots
from sc_assets_tests.conftest import run_cli


def refused(result: subprocess.CompletedProcess) -> str:
    """The one line a refusal prints (asserting that it was one: exit 2, no traceback)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sc-assets: ")
    return lines[0]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """A project after `make demo`'s two steps (3 samples), and a hidden file in its inbox."""
    project = tmp_path_factory.mktemp("project")
    demo = run_cli("demo-data", "data", "--scale", "0.02", "--samples", "3", cwd=project)
    assert demo.returncode == 0 and demo.stderr == "", demo.stderr
    (project / "data" / ".GSM5320462_Ctrl4_count_matrix.csv.gz").write_bytes(b"copying")
    result = run_cli("ingest", "--data-dir", "data", "--storage-dir", "storage", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    project.joinpath("ingest.out").write_text(result.stdout)
    return project


def test_hidden_files_in_the_inbox_are_reported(ingested):
    out = ingested.joinpath("ingest.out").read_text()
    assert "ignored .GSM5320462_Ctrl4_count_matrix.csv.gz: hidden: skipped" in out


def test_init_home_postgres_on_a_sqlite_home_is_refused_then_forced(tmp_path):
    assert run_cli("init-home", cwd=tmp_path).returncode == 0
    config = tmp_path / ".dagster_home" / "dagster.yaml"
    assert config.read_text() == SQLITE_DAGSTER_YAML

    line = refused(run_cli("init-home", "--postgres", cwd=tmp_path))
    assert "already exists (sqlite storage): add --force" in line
    assert config.read_text() == SQLITE_DAGSTER_YAML  # untouched

    forced = run_cli("init-home", "--postgres", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == str(tmp_path / ".dagster_home")
    assert "replaced (sqlite -> postgres storage)" in forced.stderr
    assert config.read_text() == POSTGRES_DAGSTER_YAML
    assert (config.parent / "dagster.yaml.before-1").read_text() == SQLITE_DAGSTER_YAML
    # asked again: already what was asked for, kept
    again = run_cli("init-home", "--postgres", cwd=tmp_path)
    assert again.returncode == 0 and "kept (postgres storage)" in again.stderr


def test_the_queue_runs_one_run_per_core(tmp_path):
    assert run_cli("init-home", cwd=tmp_path).returncode == 0
    home = tmp_path / ".dagster_home"
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    cores = os.cpu_count()
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == cores
    with DagsterInstance.from_config(str(home)) as instance:
        assert run_slots(instance) == cores  # the sensor's batches: one per slot
    text = (
        (home / "dagster.yaml")
        .read_text()
        .replace(f"max_concurrent_runs: {cores} ", "max_concurrent_runs: 3 ")
    )
    (home / "dagster.yaml").write_text(text)
    with DagsterInstance.from_config(str(home)) as instance:
        assert run_slots(instance) == 3


def test_another_storage_folder_is_refused_naming_the_instances(ingested):
    line = refused(
        run_cli("ingest", "--data-dir", "data", "--storage-dir", "newstore", cwd=ingested)
    )
    assert (
        f"keeps this study's files in {ingested / 'storage'}, not in {ingested / 'newstore'}"
        in line
    )
    assert f"--storage-dir {ingested / 'storage'}" in line
    assert not (ingested / "newstore").exists()


def test_another_data_folder_is_refused_naming_the_instances(ingested, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(ingested / "data", other)
    line = refused(
        run_cli("ingest", "--data-dir", str(other), "--storage-dir", "storage", cwd=ingested)
    )
    assert (
        f"holds the study of the data folder {ingested / 'data'}, not of the data folder {other}"
        in line
    )


def test_the_same_folders_again_ingest_nothing_new(ingested):
    again = run_cli("ingest", "--data-dir", "data", "--storage-dir", "storage", cwd=ingested)
    assert again.returncode == 0, again.stdout + again.stderr


def test_report_outside_a_project_creates_nothing(tmp_path):
    line = refused(run_cli("report", cwd=tmp_path))
    home = tmp_path / ".dagster_home"
    assert line == f"sc-assets: no runs found in DAGSTER_HOME={home} (no Dagster instance there)"
    assert list(tmp_path.iterdir()) == []
    # a home with no runs yet (just initialised) says so too and writes no report
    assert run_cli("init-home", cwd=tmp_path).returncode == 0
    line = refused(run_cli("report", cwd=tmp_path))
    assert line == f"sc-assets: no runs found in DAGSTER_HOME={tmp_path / '.dagster_home'}"
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SC_ASSETS_MIN_CELLS", "1e2", "a whole number >= 0, e.g. 100"),
        ("SC_ASSETS_MAX_CELLS", "-5", "a whole number >= 1, e.g. 100000"),
        ("SC_ASSETS_MIN_ZERO_FRACTION", "95%", "a fraction between 0 and 1, e.g. 0.9"),
        ("SC_ASSETS_SENSOR_INTERVAL", "0", "a whole number >= 1, e.g. 30"),
        ("SC_ASSETS_REINGEST_CRON", "every night", "a cron string such as '0 2 * * *'"),
        ("SC_ASSETS_TIMEZONE", "Mars/Base", "an IANA time zone such as Europe/Berlin or UTC"),
        ("SC_ASSETS_H5AD_COMPRESSION", "zstd", "one of none, lzf, gzip"),
    ],
)
def test_a_setting_that_cannot_be_used_is_one_line(tmp_path, variable, value, expected):
    (tmp_path / "data").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SC_ASSETS_")}
    result = subprocess.run(
        [sys.executable, "-m", "sc_assets.cli", "ingest"],
        cwd=tmp_path,
        env={**env, variable: value, "DAGSTER_HOME": str(tmp_path / ".dagster_home")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused(result) == f"sc-assets: {variable}={value!r}: expected {expected}"
    assert not (tmp_path / ".dagster_home").exists()  # refused before anything


def test_min_cells_above_max_cells_is_refused():
    from sc_assets.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match=r"SC_ASSETS_MAX_CELLS='50': expected at least"):
        Settings.from_env({"SC_ASSETS_MIN_CELLS": "100", "SC_ASSETS_MAX_CELLS": "50"})


def test_the_code_location_load_error_is_the_same_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SC_ASSETS_")}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "sc_assets.definitions"],
        cwd=tmp_path,
        env={**env, "SC_ASSETS_MIN_CELLS": "1e2", "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert (
        "SettingsError: SC_ASSETS_MIN_CELLS='1e2': expected a whole number >= 0, e.g. 100" in output
    )


def test_demo_data_warns_when_samples_would_fail_cell_count(tmp_path):
    result = run_cli("demo-data", "data", "--scale", "0.01", "--samples", "2", cwd=tmp_path)
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr.strip() == (
        "sc-assets: warning: 2 of 2 samples have fewer than 100 cells (as few as 89) and will "
        "fail the cell_count check (SC_ASSETS_MIN_CELLS); --scale 0.02 or more avoids that"
    )
    line = refused(run_cli("demo-data", "data", "--scale", "0", cwd=tmp_path))
    assert "expected a scale above 0" in line


@pytest.mark.parametrize(
    "command", ["demo-data", "ingest", "validate-samplesheet", "report", "init-home"]
)
def test_every_command_help_says_what_it_does_its_exit_codes_and_dagster_home(tmp_path, command):
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    usage, description = result.stdout.split("\n\n")[:2]
    assert usage.startswith(f"usage: sc-assets {command}")
    assert len(description.strip()) > 20
    assert "exit codes: 0 " in result.stdout and ", 2 " in result.stdout
    assert "DAGSTER_HOME" in result.stdout
