"""What the Dagster instance knows about each sample: materialized? which checks failed?

The merge uses it to keep failed samples out; the CLI report uses it to show every check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation
from dagster._core.event_api import PartitionKeyFilter  # not re-exported by dagster 1.13
from dagster._core.execution.plan.objects import StepFailureData
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._utils.error import SerializableErrorInfo

from sc_assets.checks import BLOCKING_SAMPLE_CHECKS
from sc_assets.study import DEFAULT_STUDY, StudyKeys


@dataclass(frozen=True)
class SampleStatus:
    """Whether one sample may enter the merge, and if not, why."""

    partition_key: str
    materialized: bool
    run_error: str | None = None
    """Why the latest run of the sample failed, when it did (a broken file replaced a good
    one, say): its last good data is kept but is no longer what its source says."""
    failed_checks: Mapping[str, str] = field(default_factory=dict)
    """ERROR check name -> its description, for checks that failed on the latest data."""
    unchecked: tuple[str, ...] = ()
    """ERROR checks with no result for the latest materialization (e.g. a crashed run)."""

    @property
    def blocked(self) -> bool:
        return (
            not self.materialized
            or self.run_error is not None
            or bool(self.failed_checks)
            or bool(self.unchecked)
        )

    @property
    def reason(self) -> str:
        """One line naming what keeps the sample out of the merge ("" when nothing does)."""
        if not self.materialized:
            return f"never materialized: {self.run_error or 'not run yet'}"
        parts = [f"{name} failed: {text}" for name, text in self.failed_checks.items()]
        if self.unchecked:
            parts.append(f"not checked: {', '.join(self.unchecked)}")
        if self.run_error:
            parts.append(f"{self.run_error} (its last good .h5ad is kept)")
        return "; ".join(parts)


def latest_check_evaluations(
    instance: DagsterInstance,
    asset_key: AssetKey,
    check_names: Iterable[str],
    partition_key: str | None = None,
) -> dict[str, AssetCheckEvaluation]:
    """The latest evaluation of each named check (of one partition, if given)."""
    keys = [AssetCheckKey(asset_key, name) for name in check_names]
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=partition_key)
    )
    return {
        key.name: record.evaluation
        for key, record in records.items()
        if record.status is not AssetCheckExecutionRecordStatus.PLANNED
        and record.evaluation is not None
    }


def sample_statuses(
    instance: DagsterInstance, partition_keys: Iterable[str], study: StudyKeys = DEFAULT_STUDY
) -> dict[str, SampleStatus]:
    """The merge status of each sample partition, from its latest materialization and checks.

    A handful of queries whatever the number of samples (the latest materialization of each
    partition, its latest attempt that left none, the blocking checks' latest executions);
    only a blocked sample costs queries of its own, for its reasons.
    """
    keys = list(partition_keys)
    wanted = set(keys)
    storage = instance.event_log_storage
    sample_adata = study.sample_adata
    latest_materialization = instance.get_latest_storage_id_by_partition(
        sample_adata, DagsterEventType.ASSET_MATERIALIZATION, partitions=wanted
    )
    run_errors = run_failures(instance, sample_adata, keys)
    infos = storage.get_asset_check_partition_info(
        [AssetCheckKey(sample_adata, name) for name in BLOCKING_SAMPLE_CHECKS],
        partition_keys=keys,
    )
    check_status = {(info.partition_key, info.check_key.name): info for info in infos}
    statuses = {}
    for key in keys:
        run_error = run_errors.get(key)
        storage_id = latest_materialization.get(key)
        if storage_id is None:
            statuses[key] = SampleStatus(key, materialized=False, run_error=run_error)
            continue
        failing, unchecked = [], []
        for name in BLOCKING_SAMPLE_CHECKS:
            info = check_status.get((key, name))
            if info is None or info.latest_target_materialization_storage_id != storage_id:
                unchecked.append(name)
            elif info.latest_execution_status is AssetCheckExecutionRecordStatus.FAILED:
                failing.append(name)
            elif info.latest_execution_status is not AssetCheckExecutionRecordStatus.SUCCEEDED:
                unchecked.append(name)
        failed = {}
        if failing:
            evaluations = latest_check_evaluations(instance, sample_adata, failing, key)
            failed = {name: evaluations[name].description or "failed" for name in failing}
        statuses[key] = SampleStatus(key, True, run_error, failed, tuple(unchecked))
    return statuses


def run_failures(
    instance: DagsterInstance, asset_key: AssetKey, partition_keys: Iterable[str]
) -> dict[str, str]:
    """Partition -> why its latest run failed, for the partitions that run did not
    materialize (:func:`latest_run_failure` for many partitions, in two queries plus one per
    failed run)."""
    wanted = set(partition_keys)
    attempts = instance.event_log_storage.get_latest_asset_partition_materialization_attempts_without_materializations(  # noqa: E501
        asset_key
    )
    run_ids = {run_id for key, (run_id, _) in attempts.items() if key in wanted}
    if not run_ids:
        return {}
    failed = instance.get_runs(
        RunsFilter(run_ids=sorted(run_ids), statuses=[DagsterRunStatus.FAILURE])
    )
    errors = {run.run_id: _logged_run_errors(instance, run.run_id) for run in failed}
    return {
        key: _failure_note(errors[run_id], key)
        for key, (run_id, _) in attempts.items()
        if key in wanted and run_id in errors
    }


#: Step-failure metadata of a batch run in which several samples failed: key -> message.
FAILED_SAMPLES_KEY = "failed_samples"


@dataclass(frozen=True)
class RunErrors:
    """What a failed run's steps said: a batch's message per failed sample, and the rest."""

    per_sample: Mapping[str, str]
    general: tuple[str, ...]

    def for_sample(self, key: str | None) -> str | None:
        """Why the run did not materialize ``key`` (None when its steps said nothing)."""
        if key is not None and key in self.per_sample:
            return self.per_sample[key]
        return "; ".join(self.general) or None


def run_errors(failures: Iterable[StepFailureData]) -> RunErrors:
    """The errors of a run's failed steps (a batch's per-sample ones apart)."""
    per_sample: dict[str, str] = {}
    general: list[str] = []
    for data in failures:
        listed = (
            data.user_failure_data.metadata.get(FAILED_SAMPLES_KEY)
            if data.user_failure_data is not None
            else None
        )
        if listed is not None:
            per_sample.update(listed.value)
        elif data.error is not None:
            general.append(root_cause_message(data.error))
    return RunErrors(per_sample, tuple(general))


def _logged_run_errors(instance: DagsterInstance, run_id: str) -> RunErrors:
    failures = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    return run_errors(event.dagster_event.step_failure_data for event in failures)


def _failure_note(errors: RunErrors, partition: str | None) -> str:
    return "latest run failed: " + (errors.for_sample(partition) or "see the run's logs")


def latest_run_failure(
    instance: DagsterInstance, asset_key: AssetKey, partition: str | None
) -> str | None:
    """Why the latest run that set out to materialize this asset (partition) failed.

    ``None`` when that run succeeded, is still going, or there never was one, and when it
    materialized this partition: a run of several samples fails when one of them does, and
    the others' data is good.
    """
    planned = instance.get_latest_planned_materialization_info(asset_key, partition)
    run = instance.get_run_by_id(planned.run_id) if planned else None
    if run is None or run.status != DagsterRunStatus.FAILURE:
        return None
    if partition is not None and _materialized_in(instance, asset_key, partition, run.run_id):
        return None
    return _failure_note(_logged_run_errors(instance, run.run_id), partition)


def _materialized_in(
    instance: DagsterInstance, asset_key: AssetKey, partition: str, run_id: str
) -> bool:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    return bool(records) and records[0].run_id == run_id


def root_cause_message(error: SerializableErrorInfo) -> str:
    """The user's exception, not Dagster's wrapper of it, and not what that exception wraps.

    ``"sc_assets.core.errors.CountMatrixError: <file>, line 3: ..."`` becomes
    ``"<file>, line 3: ..."``: the message already says what is wrong.
    """
    while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    message = error.message.strip()
    prefix, sep, rest = message.partition(": ")
    return rest if sep and "." in prefix and " " not in prefix else message


def samples_to_forget(
    instance: DagsterInstance, missing_keys: Iterable[str], study: StudyKeys = DEFAULT_STUDY
) -> list[str]:
    """Of the samples whose source file is gone, those that leave nothing worth keeping.

    A sample that was never materialized, or whose latest data fails an ERROR check, is
    dropped from the ``samples`` partitions, so removing a bad file unblocks the merge. A
    sample with good data keeps its partition and its last ``.h5ad``: deleting an input file
    must not silently shrink the merged data.
    """
    return [
        key
        for key, status in sample_statuses(instance, missing_keys, study).items()
        if status.blocked
    ]
