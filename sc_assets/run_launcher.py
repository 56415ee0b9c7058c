"""A run launcher whose run workers the Dagster daemon's run monitor can check.

Dagster's ``DefaultRunLauncher`` starts each run in a process of the code server, and the code
server marks a run failed when that process dies while it watches. But it says it cannot
check a run worker's health (``supports_check_run_worker_health`` is False), so a run whose
process vanished while nobody watched (the code server or ``dagster dev`` restarted, the
machine's OOM killer took both) stays STARTED forever: it holds a queue slot, the merge waits
for it, and run retries never see a failure. This launcher is the default one plus that
check: the run worker's pid is in the run's "Started process for run" event; if no such
process is alive, the run monitor (``run_monitoring`` in ``dagster.yaml``, every
``poll_interval_seconds``) marks the run failed, which frees its slot and lets run retries
launch it again.
"""

from __future__ import annotations

import os

from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus


class MonitoredRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose run workers' health the run monitor can check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = run_worker_pid(self._instance, run.run_id)
        if pid is None:  # not started yet, or started on another machine: not ours to judge
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker pid not known yet")
        if process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run worker process {pid} is gone (killed, e.g. by the out-of-memory killer, "
            "or it crashed) while the run was in progress",
        )


def run_worker_pid(instance, run_id: str) -> int | None:
    """The pid of a run's worker, from its "Started process for run (pid: N)" event."""
    for record in reversed(instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)):
        event = record.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None and str(event.message or "").startswith("Started process for"):
            return int(str(pid.value))
    return None


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
