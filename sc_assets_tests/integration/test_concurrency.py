"""Twelve sample runs at once through the run queue, on SQLite and on PostgreSQL."""

import uuid

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from sc_assets.core.demo import write_demo_series
from sc_assets.dagster_home import POSTGRES_DAGSTER_YAML
from sc_assets.sample_status import latest_check_evaluations
from sc_assets_tests.integration.conftest import start_dagster_dev, stop_dagster_dev

pytestmark = pytest.mark.integration

SAMPLE, MERGED = AssetKey("sample_adata"), AssetKey("merged_adata")
CHECKS = ["cell_count", "gene_set", "sparsity", "count_integrity", "empty_cells", "mt_genes"]
POSTGRES = "postgresql://postgres@127.0.0.1:5432"  # for psycopg2.connect (libpq)


@pytest.fixture
def postgres_database(monkeypatch):
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(f"{POSTGRES}/postgres", connect_timeout=3)
    except psycopg2.OperationalError as error:
        pytest.skip(f"no PostgreSQL server answers at 127.0.0.1:5432 ({error})")
    admin.autocommit = True
    name = f"sc_assets_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"  # SQLAlchemy URL
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
    yield name
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request):
    if request.param == "postgres":
        request.getfixturevalue("postgres_database")
    return request.param


def test_twelve_concurrent_sample_runs(storage, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    if storage == "postgres":
        (home / "dagster.yaml").write_text(POSTGRES_DAGSTER_YAML)
    # the sensor finds all twelve at its first tick and queues twelve runs at once
    paths = write_demo_series(tmp_path / "data", scale=0.012, samples=12, seed=3, workers=1)
    keys = sorted(p.name.removesuffix("_count_matrix.csv.gz") for p in paths)

    dev = start_dagster_dev(tmp_path)
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == (
                "PostgresRunStorage" if storage == "postgres" else "SqliteRunStorage"
            )
            dev.wait_until(
                lambda: set(keys) <= instance.get_materialized_partitions(SAMPLE),
                timeout=420,
                what="12 sample_adata partitions",
                interval=2,
            )
            merged = dev.wait_until(
                lambda: instance.get_latest_materialization_event(MERGED),
                timeout=240,
                what="merged_adata",
                interval=2,
            )
            sample_runs = instance.get_run_records(RunsFilter(job_name="ingest_sample"))
            assert len(sample_runs) == 12
            assert {r.dagster_run.status for r in sample_runs} == {DagsterRunStatus.SUCCESS}
            for key in keys:
                evaluations = latest_check_evaluations(instance, SAMPLE, CHECKS, key)
                assert sorted(evaluations) == sorted(CHECKS), key
                assert all(e.passed for e in evaluations.values()), key
            assert merged.asset_materialization.metadata["n_samples"].value == 12
            merged_checks = dev.wait_until(
                lambda: latest_check_evaluations(instance, MERGED, ["cell_count"]),
                timeout=60,
                what="merged_adata's checks",
            )
            assert merged_checks["cell_count"].passed
            durations = sorted(r.end_time - r.start_time for r in sample_runs)
            print(f"{storage}: sample runs took {durations[0]:.1f}-{durations[-1]:.1f} s")
    finally:
        stop_dagster_dev(dev)
    stray = [p for p in (tmp_path / "storage").rglob(".*") if p.is_file()]
    assert stray == []  # no temp file left behind, none collided
