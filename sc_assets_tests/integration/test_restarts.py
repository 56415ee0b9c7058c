"""The broker and PostgreSQL restart while batches run: nothing is lost, nothing duplicated.

The cluster of ``test_distributed.py`` (``cluster_demo.cluster``: ``dagster dev`` with
``deploy/dagster.yaml``, two Celery workers on simulated hosts), but with a PostgreSQL server
and a RabbitMQ node of the test's own, which it restarts: the machine's are shared with tests
running in parallel. RabbitMQ rather than Redis because it is the deployment's broker
(deploy/README.md): its durable queues keep the runs waiting in it across a restart, as a
deployment's broker does (a Redis without persistence would drop them: a different system).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

from sc_assets.core.demo import write_demo_series
from sc_assets.jobs import sample_job
from sc_assets_tests.integration.cluster import (
    OwnPostgres,
    OwnRabbitMQ,
    own_postgres,
    own_rabbitmq,
    skip_unless_own_services_possible,
)
from sc_assets_tests.integration.cluster_demo import (
    Cluster,
    cluster,
    instance_of,
    merged_samples,
    sample_hosts,
    wait_until,
)
from sc_assets_tests.integration.test_distributed import assert_merged_equals_concat

pytestmark = pytest.mark.integration

#: Run statuses that are not final: none may remain once everything is merged.
UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


@dataclass
class Restartable:
    cluster: Cluster
    postgres: OwnPostgres
    broker: OwnRabbitMQ


@pytest.fixture
def restartable(tmp_path: Path):
    skip_unless_own_services_possible()
    with (
        own_postgres() as postgres,
        own_rabbitmq() as broker,
        cluster(tmp_path / "cluster", postgres_port=postgres.port, rabbitmq_port=broker.port)
        as state,
    ):  # fmt: skip
        yield Restartable(state, postgres, broker)


def test_a_broker_restart_and_a_postgres_restart_mid_batch_lose_and_duplicate_nothing(
    restartable: Restartable, tmp_path: Path
):
    state = restartable.cluster
    files = write_demo_series(tmp_path / "demo", scale=0.015, samples=10, seed=3, workers=1)
    # Two bigger samples in the second batch: their step lasts long enough to restart
    # PostgreSQL under it.
    big = write_demo_series(tmp_path / "big", scale=0.12, samples=2, seed=4, workers=1)
    names = ["GSM5320498_Pre9", "GSM5320499_Post9"]
    big = [
        p.rename(p.with_name(f"{n}_count_matrix.csv.gz")) for p, n in zip(big, names, strict=True)
    ]
    first, second = files[:6], [*big, *files[6:]]
    keys = sorted(p.name.removesuffix("_count_matrix.csv.gz") for p in [*first, *second])
    report: list[str] = []
    with instance_of(state) as instance:
        # 1. The broker restarts while the first batch runs (some runs on the workers, some
        #    waiting in its queue).
        state.upload(first)
        wait_until(lambda: _in_flight(instance), timeout=180, state=state, interval=0.2,
                   what="sample runs started and others waiting")  # fmt: skip
        report.append(_restart(instance, state, "RabbitMQ", restartable.broker.restart))
        batch = sorted(p.name.removesuffix("_count_matrix.csv.gz") for p in first)
        wait_until(lambda: merged_samples(instance) == batch, timeout=300, state=state,
                   what="the merge of the first batch")  # fmt: skip

        # 2. PostgreSQL restarts while the second batch runs.
        state.upload(second)
        wait_until(lambda: _in_a_step(instance), timeout=180, state=state, interval=0.2,
                   what="a sample run inside its step, others waiting")  # fmt: skip
        report.append(_restart(instance, state, "PostgreSQL", restartable.postgres.restart))
        wait_until(lambda: merged_samples(instance) == keys, timeout=300, state=state,
                   what="the merge of both batches")  # fmt: skip

        # Every sample materialized, merged once; no run left unfinished; every run the
        # outages failed was retried, and the retry succeeded.
        assert sorted(sample_hosts(instance)) == keys
        assert_merged_equals_concat(state, keys, tmp_path)
        wait_until(lambda: not instance.get_runs(RunsFilter(statuses=UNFINISHED)), timeout=120,
                   state=state, what="every run to finish")  # fmt: skip
        failed = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
        for run in failed:
            if _failed_in_a_step(instance, run.run_id):
                continue  # e.g. a merge refused while samples were missing: not retried
            assert _succeeded_eventually(instance, run.run_id), _story(instance, run.run_id)
        report.append(f"{len(instance.get_runs())} runs, {len(failed)} failed: "
                      + ", ".join(_summary(instance, r) for r in failed))  # fmt: skip
    print("\n" + "\n".join(report))


def _in_flight(instance) -> bool:
    """At least one sample run executing on a worker and one launched or queued behind it."""
    runs = instance.get_runs(RunsFilter(job_name=sample_job.name, statuses=UNFINISHED))
    started = [r for r in runs if r.status == DagsterRunStatus.STARTED]
    return bool(started) and len(runs) > len(started)


def _in_a_step(instance) -> bool:
    """A sample run is executing its step (started, not yet ended) and another is waiting."""
    if not _in_flight(instance):
        return False
    for run in instance.get_runs(
        RunsFilter(job_name=sample_job.name, statuses=[DagsterRunStatus.STARTED])
    ):
        kinds = {
            DagsterEventType.STEP_START,
            DagsterEventType.STEP_SUCCESS,
            DagsterEventType.STEP_FAILURE,
        }
        seen = {
            r.event_log_entry.dagster_event_type
            for r in instance.get_records_for_run(run.run_id, of_type=kinds).records
        }
        if seen == {DagsterEventType.STEP_START}:
            return True
    return False


def _restart(instance, state: Cluster, service: str, restart) -> str:
    """Restart ``service``; wait until a run starts on a worker after it is back and every
    run the outage touched has finished. Returns what happened, with the times."""
    before = {r.run_id: r.status for r in instance.get_runs(RunsFilter(statuses=UNFINISHED))}
    stopped_at, clock = time.time(), time.monotonic()
    restart()
    back = time.monotonic() - clock
    # Recovered: a run started after the restart (the launcher, the broker and a worker
    # work again); then every run unfinished at the restart has ended, one way or another.
    wait_until(lambda: _started_since(instance, stopped_at + back), timeout=240, state=state,
               what=f"a run to start after the {service} restart")  # fmt: skip
    recovered = time.monotonic() - clock
    wait_until(lambda: all(instance.get_run_by_id(i).is_finished for i in before), timeout=300,
               state=state, what=f"the runs in flight at the {service} restart to end")  # fmt: skip
    settled = time.monotonic() - clock
    ended = {i: instance.get_run_by_id(i).status.value for i in before}
    counts = {s: list(ended.values()).count(s) for s in sorted(set(ended.values()))}
    return (f"{service}: restarted in {back:.1f} s with {len(before)} runs in flight "
            f"({_count(before.values())}); a run started {recovered:.1f} s after the restart "
            f"began; all {len(before)} ended {settled:.1f} s after it: {counts}")  # fmt: skip


def _started_since(instance, since: float) -> bool:
    records = instance.get_run_records(limit=200)
    return any(r.start_time and r.start_time > since for r in records)


def _count(statuses) -> str:
    values = [s.value for s in statuses]
    return ", ".join(f"{values.count(v)} {v}" for v in sorted(set(values)))


def _failed_in_a_step(instance, run_id: str) -> bool:
    return bool(instance.get_records_for_run(
        run_id, of_type=DagsterEventType.STEP_FAILURE).records)  # fmt: skip


def _succeeded_eventually(instance, run_id: str) -> bool:
    """Whether a retry of ``run_id`` (a run naming it as parent), or a retry of that, ...,
    succeeded."""
    for retry in instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": run_id})):
        if retry.status == DagsterRunStatus.SUCCESS or _succeeded_eventually(
            instance, retry.run_id
        ):
            return True
    return False


def _summary(instance, run) -> str:
    messages = [e.message or "" for e in instance.all_logs(run.run_id)]
    why = next((m for m in reversed(messages) if m), "")[:160]
    return f"{run.job_name} {run.tags.get('dagster/partition', '')} ({why})"


def _story(instance, run_id: str) -> str:
    lines = [
        f"{e.dagster_event_type}: {(e.message or '')[:300]}" for e in instance.all_logs(run_id)
    ]
    return f"run {run_id} failed and no retry succeeded:\n" + "\n".join(lines[-15:])
