"""The run monitor's view of a run worker: alive while its process is, failed once it is gone."""

from __future__ import annotations

import subprocess
import sys

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from dagster._core.events import EngineEventData
from dagster._core.launcher.base import WorkerStatus

from sc_assets.dagster_home import (
    ROUND_1_SQLITE_DAGSTER_YAML,
    SQLITE_DAGSTER_YAML,
    ensure_dagster_home,
)
from sc_assets.run_launcher import MonitoredRunLauncher


def test_a_vanished_run_worker_is_reported_failed(tmp_path):
    home = ensure_dagster_home(tmp_path / "home")
    with DagsterInstance.from_config(str(home)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, MonitoredRunLauncher)
        assert launcher.supports_check_run_worker_health
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        run = instance.add_run(
            DagsterRun(job_name="ingest_sample", status=DagsterRunStatus.STARTED)
        )
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING  # no pid yet

        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        instance.report_engine_event(
            f"Started process for run (pid: {worker.pid}).",
            run,
            EngineEventData.in_process(worker.pid),
        )
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
        worker.kill()
        worker.wait()
        health = launcher.check_run_worker_health(run)
        assert health.status == WorkerStatus.FAILED
        assert f"the run worker process {worker.pid} is gone" in health.msg


def test_a_home_written_by_round_1_is_brought_up_to_date(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    round_1 = ROUND_1_SQLITE_DAGSTER_YAML
    assert "max_concurrent_runs: 2 " in round_1 and "run_retries" not in round_1
    (home / "dagster.yaml").write_text(round_1)
    ensure_dagster_home(home)
    assert (home / "dagster.yaml").read_text() == SQLITE_DAGSTER_YAML
    assert (home / "dagster.yaml.before-1").read_text() == round_1

    edited = SQLITE_DAGSTER_YAML + "# mine\n"
    (home / "dagster.yaml").write_text(edited)
    ensure_dagster_home(home)  # a file someone edited is theirs
    assert (home / "dagster.yaml").read_text() == edited
