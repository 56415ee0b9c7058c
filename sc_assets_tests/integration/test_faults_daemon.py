"""Runs killed under the real daemon heal themselves: the reference pin, then a sample.

``kill -9`` of a run's worker process (what the out-of-memory killer does) marks the run
failed; Dagster's run retries (on in the ``dagster.yaml`` sc-assets writes) launch it again, and
every sample ends up materialized and merged without a click.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG

from sc_assets.core.demo import write_demo_series
from sc_assets.run_launcher import run_worker_pid
from sc_assets_tests.integration.conftest import start_dagster_dev, stop_dagster_dev

pytestmark = pytest.mark.integration

SAMPLE, MERGED = AssetKey("sample_adata"), AssetKey("merged_adata")


def kill_first_run_of(instance: DagsterInstance, job_name: str, timeout: float) -> DagsterRun:
    """Wait for a run of ``job_name`` to start its worker, then ``kill -9`` that worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in instance.get_runs(
            RunsFilter(job_name=job_name, statuses=[DagsterRunStatus.STARTED]), limit=5
        ):
            pid = run_worker_pid(instance, run.run_id)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                return run
        time.sleep(0.05)
    pytest.fail(f"no run of {job_name} started within {timeout:.0f} s")


def test_killed_runs_are_retried_and_everything_is_merged(tmp_path):
    paths = write_demo_series(tmp_path / "staging", scale=0.012, samples=3, seed=4, workers=1)
    keys = sorted(p.name.removesuffix("_count_matrix.csv.gz") for p in paths)
    dev = start_dagster_dev(tmp_path)
    try:
        with DagsterInstance.from_config(str(dev.home)) as instance:
            for path in paths:
                shutil.copy(path, dev.data_dir / path.name)
            pin = kill_first_run_of(instance, "pin_reference_genes", timeout=120)
            sample = kill_first_run_of(instance, "ingest_sample", timeout=180)

            dev.wait_until(
                lambda: set(keys) <= instance.get_materialized_partitions(SAMPLE),
                timeout=300,
                what="every sample materialized after the kills",
                interval=2,
            )
            dev.wait_until(
                lambda: _merged_after_all_samples(instance),
                timeout=240,
                what="merged_adata after every sample",
                interval=2,
            )
            for killed in (pin, sample):
                run = instance.get_run_by_id(killed.run_id)
                assert run.status == DagsterRunStatus.FAILURE, run.status
                retry = instance.get_run_by_id(run.tags[AUTO_RETRY_RUN_ID_TAG])
                assert retry is not None and retry.status == DagsterRunStatus.SUCCESS
                assert retry.tags.get("dagster/partition") == killed.tags.get("dagster/partition")
    finally:
        stop_dagster_dev(dev)


def _merged_after_all_samples(instance: DagsterInstance) -> bool:
    merged = instance.fetch_materializations(MERGED, limit=1).records
    samples = instance.fetch_materializations(SAMPLE, limit=1).records
    return bool(merged) and bool(samples) and merged[0].storage_id > samples[0].storage_id
