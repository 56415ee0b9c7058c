"""dagster-celery's run launcher, with a health check that notices a lost worker.

``CeleryRunLauncher`` judges a run's health by its Celery task's state in the result backend.
A worker that dies with its host (killed, power lost, network gone) never writes another state:
its task stays ``STARTED`` forever, the run stays STARTED, its queue slot is held, the merge
waits for it and run retries never see a failure. This launcher adds what the state cannot
say: the task's ``STARTED`` record names the worker that took it (Celery writes its hostname
there), and a live worker answers Celery's ``ping`` broadcast. When that worker has not
answered ``missed_pings`` looks of the run monitor in a row, the run is reported FAILED; the
run monitor (``run_monitoring`` in ``dagster.yaml``) marks it failed and run retries launch it
again, on whichever worker takes it from the queue.

Bound: a lost worker's run is marked failed after ``missed_pings`` monitor polls, i.e. within
``missed_pings * poll_interval_seconds`` plus one ping timeout (deploy/dagster.yaml: 3 x 10 s
+ 2 s). Everything else (queues, the ``dagster-celery/queue`` tag, the task itself) is
dagster-celery's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from dagster import DagsterRun, Field, IntSource
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._serdes import ConfigurableClassData
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

#: Seconds a ping broadcast waits for the workers' answers.
PING_TIMEOUT_SECONDS = 2.0


class MonitoredCeleryRunLauncher(CeleryRunLauncher):
    """``CeleryRunLauncher`` whose health check reports a run FAILED when its worker is gone."""

    def __init__(self, *, missed_pings: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.missed_pings = missed_pings
        self._missed: dict[str, int] = {}
        self._answering: tuple[float, frozenset[str]] = (0.0, frozenset())

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            **super().config_type(),
            "missed_pings": Field(
                IntSource,
                is_required=False,
                default_value=3,
                description=(
                    "Run-monitor polls in a row in which a run's worker must not answer "
                    "Celery's ping before the run is reported failed."
                ),
            ),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> MonitoredCeleryRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        health = super().check_run_worker_health(run)
        if health.status != WorkerStatus.RUNNING:
            return health
        worker = self.worker_of(run)
        if worker is None or worker in self.answering_workers():
            self._missed.pop(run.run_id, None)
            return health
        missed = self._missed[run.run_id] = self._missed.get(run.run_id, 0) + 1
        if missed < self.missed_pings:
            return CheckRunHealthResult(
                WorkerStatus.RUNNING,
                f"Celery worker {worker} did not answer a ping ({missed} of {self.missed_pings})",
            )
        self._missed.pop(run.run_id, None)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"Celery worker {worker}, which was running this run, stopped answering "
            f"({missed} pings in a row): its host was lost or the worker was killed",
        )

    def worker_of(self, run: DagsterRun) -> str | None:
        """The Celery worker (``name@host``) that took the run's task, once it started."""
        task_id = run.tags.get(DAGSTER_CELERY_TASK_ID_TAG)
        if task_id is None:
            return None
        info = self.celery.AsyncResult(task_id).info
        return info.get("hostname") if isinstance(info, dict) else None

    def answering_workers(self) -> frozenset[str]:
        """The workers that answer a ping now (one broadcast per few seconds, shared by all
        the runs the monitor checks in one poll)."""
        at, workers = self._answering
        if time.monotonic() - at > PING_TIMEOUT_SECONDS * 2:
            replies = self.celery.control.ping(timeout=PING_TIMEOUT_SECONDS)
            workers = frozenset(name for reply in replies for name in reply)
            self._answering = (time.monotonic(), workers)
        return workers
