"""Runs that failed for a reason that may not happen again, and the runs that recover them.

A run fails deterministically when one of its steps fails on the data (a malformed file, a
failed ERROR check, a full disk): running it again gives the same failure, so nothing here
retries those. It fails transiently when its worker process vanished (``kill -9``, the
out-of-memory killer, a restart) or a step hit an I/O error after its own retries: Dagster's
run retries (``dagster.yaml``) launch such a run again at once; what they leave failed (retries
exhausted, or turned off) the sensor asks for again here, a bounded number of times, so that
nothing waits for the nightly schedule.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import (  # not re-exported by dagster 1.13
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    AUTO_RETRY_RUN_ID_TAG,
    PARTITION_NAME_TAG,
    RUN_FAILURE_REASON_TAG,
    WILL_RETRY_TAG,
)

#: Recoveries the sensor requests for one sample (or the reference pin) in a row.
MAX_RECOVERIES = 2
#: The tag counting them on a recovery run.
RECOVERY_TAG = "sc_assets/recovery"
#: The tag of a pin run naming the inputs it was asked for (a digest).
INPUTS_TAG = "sc_assets/inputs"
#: A step's errors that may not happen again (the machine's, not the data's).
_TRANSIENT_ERRORS = frozenset(
    {
        "OSError",
        "IOError",
        "TimeoutError",
        "ConnectionError",
        "ConnectionResetError",
        "BrokenPipeError",
        "InterruptedError",
        # A database or broker connection lost mid-step (a PostgreSQL or RabbitMQ restart):
        # SQLAlchemy's, psycopg2's and kombu's name for it.
        "OperationalError",
    }
)
#: The tags of a run of several partitions (a range), carried over to its recovery.
_RANGE_TAGS = (ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG)
#: Failed runs looked at per sensor tick.
_FAILED_RUNS_PER_TICK = 100


@dataclass(frozen=True)
class Recovery:
    """A failed run worth another attempt."""

    run: DagsterRun
    reason: str
    attempt: int
    """1 for the first recovery of this run's chain, 2 for the next..."""

    @property
    def partition_key(self) -> str | None:
        return self.run.tags.get(PARTITION_NAME_TAG)

    @property
    def run_key(self) -> str:
        return f"recover:{self.run.run_id}"

    @property
    def tags(self) -> dict[str, str]:
        """The recovery count, and the partition range of a run of several samples."""
        tags = {RECOVERY_TAG: str(self.attempt)}
        return {**tags, **{key: self.run.tags[key] for key in _RANGE_TAGS if key in self.run.tags}}


def transient_failure(instance: DagsterInstance, run: DagsterRun) -> str | None:
    """Why ``run`` failed, when another attempt may succeed; None when it may not."""
    reason = run.tags.get(RUN_FAILURE_REASON_TAG, "UNKNOWN")
    if reason != "STEP_FAILURE":
        return f"its process ended unexpectedly ({reason.lower().replace('_', ' ')})"
    # A step failure is the data's fault (CountMatrixError, a failed check, a full disk),
    # unless its error is one of the machine's.
    for record in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE):
        error = record.dagster_event.step_failure_data.error
        while error is not None and (error.cls_name or "").startswith("Dagster"):
            error = error.cause
        if error is not None and error.cls_name in _TRANSIENT_ERRORS:
            return f"an I/O error: {error.message.strip()}"
    return None


def pin_request(
    instance: DagsterInstance, job_name: str, first: str, inputs_digest: str
) -> tuple[str, dict[str, str]] | None:
    """The run key and tags of a run pinning the reference genes, or None to wait.

    The first pin is asked for once. After a failed one (and after Dagster's own retries of
    it), another is asked for when the failure was transient (at most :data:`MAX_RECOVERIES`
    times in a row) or when the inputs changed since (``inputs_digest``): a pin that failed
    on the data fails again on the same data, but may succeed with the next sample.
    """
    runs = instance.get_runs(RunsFilter(job_name=job_name), limit=1)
    tags = {INPUTS_TAG: inputs_digest}
    if not runs:
        return f"reference_genes:{first}", tags
    last = runs[0]
    if not last.is_finished or last.status != DagsterRunStatus.FAILURE:
        return None  # queued or in progress; or it succeeded and its result is being recorded
    if last.tags.get(WILL_RETRY_TAG) == "true" or last.tags.get(AUTO_RETRY_RUN_ID_TAG):
        return None
    attempt = int(last.tags.get(RECOVERY_TAG, "0")) + 1
    if attempt <= MAX_RECOVERIES and transient_failure(instance, last) is not None:
        return f"reference_genes:recover:{last.run_id}", {**tags, RECOVERY_TAG: str(attempt)}
    if last.tags.get(INPUTS_TAG) != inputs_digest:
        return f"reference_genes:after:{last.run_id}:{inputs_digest}", tags
    return None


def recoveries(
    instance: DagsterInstance,
    job_names: Sequence[str],
    since: float,
    seen: Sequence[str] = (),
) -> tuple[list[Recovery], float, tuple[str, ...]]:
    """Failed runs of ``job_names`` not looked at yet that deserve another attempt.

    Looks at runs that failed (or changed) at ``since`` (a timestamp) or after, except the
    ``seen`` ones; returns what deserves another attempt, and the ``since`` and ``seen`` to
    pass next time (run storage keeps whole seconds, so the runs of the last second are
    remembered by id). A run is skipped when Dagster will retry it itself or already did,
    when a newer run of the same target exists, and once a chain of recoveries reached
    :data:`MAX_RECOVERIES`.
    """
    records = instance.get_run_records(
        filters=RunsFilter(
            statuses=[DagsterRunStatus.FAILURE],
            updated_after=datetime.datetime.fromtimestamp(since - 1, datetime.UTC),
        ),
        limit=_FAILED_RUNS_PER_TICK,
        ascending=True,
    )
    found: list[Recovery] = []
    newest, at_newest = since, set(seen)
    for record in records:
        stamp, run = record.update_timestamp.timestamp(), record.dagster_run
        if stamp < since or (stamp == since and run.run_id in seen):
            continue
        if stamp > newest:
            newest, at_newest = stamp, set()
        at_newest.add(run.run_id)
        if run.job_name not in job_names:
            continue
        if run.tags.get(WILL_RETRY_TAG) == "true" or run.tags.get(AUTO_RETRY_RUN_ID_TAG):
            continue  # Dagster's run retries have it
        attempt = int(run.tags.get(RECOVERY_TAG, "0")) + 1
        if attempt > MAX_RECOVERIES or _superseded(instance, run):
            continue
        reason = transient_failure(instance, run)
        if reason is not None:
            found.append(Recovery(run, reason, attempt))
    return found, newest, tuple(sorted(at_newest))


def _superseded(instance: DagsterInstance, run: DagsterRun) -> bool:
    """Whether a newer run of the same job (and partition, or partition range) exists."""
    tags = {key: run.tags[key] for key in (PARTITION_NAME_TAG, *_RANGE_TAGS) if key in run.tags}
    latest = instance.get_runs(RunsFilter(job_name=run.job_name, tags=tags), limit=1)
    return bool(latest) and latest[0].run_id != run.run_id
