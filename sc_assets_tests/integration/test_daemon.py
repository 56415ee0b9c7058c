"""The real daemon, on SQLite and on PostgreSQL: files land, nobody clicks.

The sensor queues a sample run per file at once; the run queue runs them two at a time; every
materialization and check is recorded; the automation then merges them once. Copying a file
again with the same bytes launches nothing, replacing it with other bytes re-ingests that
sample once and refreshes the merge, and a junk name never becomes a partition.

SQLite gets the whole series (twelve files: the most queued runs and concurrent writers);
PostgreSQL, whose part is the storage, four, which keeps the two daemons that run side by
side in the suite from taking half of its time.
"""

import shutil
import uuid

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from sc_assets.batches import batch_keys
from sc_assets.core.demo import write_demo_series
from sc_assets.dagster_home import POSTGRES_DAGSTER_YAML
from sc_assets.sample_status import latest_check_evaluations
from sc_assets_tests.integration.conftest import start_dagster_dev, stop_dagster_dev

pytestmark = pytest.mark.integration

SAMPLE, MERGED = AssetKey("sample_adata"), AssetKey("merged_adata")
CHECKS = ["cell_count", "gene_set", "sparsity", "count_integrity", "empty_cells", "mt_genes"]


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for this test (dropped afterwards), as a SQLAlchemy URL."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3)
    except psycopg2.OperationalError as error:
        pytest.skip(f"no PostgreSQL server answers at 127.0.0.1:5432 ({error})")
    admin.autocommit = True
    name = f"sc_assets_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.mark.parametrize(("storage", "n_files"), [("sqlite", 12), ("postgres", 4)])
def test_dropped_files_are_ingested_then_merged(storage, n_files, tmp_path, request, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    if storage == "postgres":
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", request.getfixturevalue("postgres_url"))
        (home / "dagster.yaml").write_text(POSTGRES_DAGSTER_YAML)
    staging = tmp_path / "staging"
    paths = write_demo_series(staging, scale=0.012, samples=n_files, seed=3, workers=1)
    keys = sorted(p.name.removesuffix("_count_matrix.csv.gz") for p in paths)

    dev = start_dagster_dev(tmp_path)
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == (
                "PostgresRunStorage" if storage == "postgres" else "SqliteRunStorage"
            )
            for path in paths:  # the sequencing core drops the files
                shutil.copy(path, dev.data_dir / path.name)
            (dev.data_dir / "notes.txt").write_text("junk")

            dev.wait_until(
                lambda: set(keys) <= instance.get_materialized_partitions(SAMPLE),
                timeout=420,
                what=f"{n_files} sample_adata partitions",
                interval=2,
            )
            merged = dev.wait_until(
                lambda: instance.get_latest_materialization_event(MERGED),
                timeout=240,
                what="merged_adata",
                interval=2,
            )
            assert merged.asset_materialization.metadata["n_samples"].value == n_files
            assert sorted(instance.get_dynamic_partitions("samples")) == keys  # no notes.txt

            sample_runs = instance.get_run_records(RunsFilter(job_name="ingest_sample"))
            # Files landed together run in batches (partition ranges): each sample once.
            order = instance.get_dynamic_partitions("samples")
            covered = [k for r in sample_runs for k in batch_keys(order, r.dagster_run.tags)]
            assert sorted(covered) == keys
            assert len(sample_runs) < n_files
            assert {r.dagster_run.status for r in sample_runs} == {DagsterRunStatus.SUCCESS}
            for key in keys:
                evaluations = latest_check_evaluations(instance, SAMPLE, CHECKS, key)
                assert sorted(evaluations) == sorted(CHECKS), key
                assert all(e.passed for e in evaluations.values()), key
            merged_checks = dev.wait_until(
                lambda: latest_check_evaluations(instance, MERGED, ["cell_count"]),
                timeout=60,
                what="merged_adata's checks",
            )
            assert merged_checks["cell_count"].passed

            # the same bytes copied again: the sensor looks, hashes, and launches nothing
            runs_before = len(instance.get_run_records())
            shutil.copy(paths[0], dev.data_dir / paths[0].name)
            dev.wait_until(
                lambda: _ticks_since(instance, merged.timestamp) >= 3, timeout=60, what="3 ticks"
            )
            assert len(instance.get_run_records()) == runs_before

            # the file replaced by other bytes: that sample once, then a fresh merge
            replaced = write_demo_series(tmp_path / "v2", scale=0.012, samples=1, seed=4)[0]
            assert replaced.name == paths[0].name and replaced.read_bytes() != paths[0].read_bytes()
            shutil.copy(replaced, dev.data_dir / replaced.name)
            remerged = dev.wait_until(
                lambda: _newer(instance.get_latest_materialization_event(MERGED), merged),
                timeout=240,
                what="merged_adata again after the replaced file",
                interval=2,
            )
            batches = len(sample_runs)
            sample_runs = instance.get_run_records(RunsFilter(job_name="ingest_sample"))
            assert len(sample_runs) == batches + 1
            rerun = sample_runs[0].dagster_run  # newest first
            assert rerun.tags["dagster/partition"] == keys[0]
            assert rerun.status == DagsterRunStatus.SUCCESS
            assert remerged.asset_materialization.metadata["n_samples"].value == n_files
    finally:
        stop_dagster_dev(dev)
    stray = [p for p in (tmp_path / "storage").rglob(".*") if p.is_file()]
    assert stray == []  # no temporary file left behind: none collided, none leaked


def _newer(event, than):
    """``event`` if it is a later event than ``than``, else None (for ``wait_until``)."""
    return event if event is not None and event.timestamp > than.timestamp else None


def _ticks_since(instance: DagsterInstance, timestamp: float) -> int:
    sensor = next(
        s for s in instance.all_instigator_state() if s.instigator_name == "new_samples_sensor"
    )
    ticks = instance.get_ticks(sensor.instigator_origin_id, sensor.selector_id, limit=20)
    return sum(1 for tick in ticks if tick.timestamp > timestamp)
