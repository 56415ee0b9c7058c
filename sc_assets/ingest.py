"""Headless ingestion: register every sample, materialize it, then merge.

Samples are ingested in batches: each batch is one Dagster run of a partition range on the
persistent instance (so the UI shows them later), in which every sample gets its own
materialization and checks (see :mod:`sc_assets.assets.samples`). A run costs a few hundred
milliseconds of bookkeeping whatever it holds, which small samples would pay many times over.
Batches run in a pool of worker processes that import the code location once and then take
one batch after another: both cores are busy and the ~2 s import of Dagster and anndata, and
the loading of the parser's compiled code, are paid once per worker. A worker that dies
(the out-of-memory killer, ``kill -9``) fails only its batch, whose run is marked failed; the
others go on (see :mod:`sc_assets.worker_pool`).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    JobDefinition,
    JobExecutionResult,
    RunsFilter,
    build_reconstructable_job,
    execute_job,
)
from upath import UPath

from sc_assets.batches import batch_tags, plan_batches
from sc_assets.checks import SAMPLE_CHECKS
from sc_assets.core.inbox import SampleInput, scan_inbox
from sc_assets.core.remote import location
from sc_assets.core.validation import Severity
from sc_assets.jobs import INGEST_SAMPLE, MERGE_SAMPLES, PIN_REFERENCE_GENES
from sc_assets.sample_status import run_errors, samples_to_forget
from sc_assets.settings import Settings
from sc_assets.sources import observed_sources, sample_version, source_observation
from sc_assets.study import DEFAULT_STUDY, StudyKeys
from sc_assets.worker_pool import TaskError, WorkerLost, WorkerPool

SUMMARY_KEYS = ("n_obs", "n_vars", "sparsity", "median_total_counts")


@dataclass(frozen=True)
class RunOutcome:
    """What one run did, in plain values (a run result object cannot cross processes)."""

    partition_key: str | None
    success: bool
    summary: dict[str, Any] = field(default_factory=dict)
    failed_checks: dict[str, str] = field(default_factory=dict)
    """ERROR check name -> description."""
    warnings: dict[str, str] = field(default_factory=dict)
    """WARN check name -> description."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.success and not self.failed_checks

    @property
    def status(self) -> str:
        if self.error:
            return f"ERROR: {self.error}"
        if self.failed_checks:
            return "FAILED: " + "; ".join(f"{k}: {v}" for k, v in self.failed_checks.items())
        if self.warnings:
            return "ok (warn: " + ", ".join(self.warnings) + ")"
        return "ok"


@dataclass(frozen=True)
class IngestReport:
    """Everything ``sc-assets ingest`` did."""

    samples: list[RunOutcome]
    ignored_files: list[tuple[str, str]]
    """(name, reason) for entries of the data folder that are not samples, and for known
    samples whose input is gone."""
    merge: RunOutcome | None

    @property
    def ok(self) -> bool:
        return (
            all(sample.ok for sample in self.samples) and self.merge is not None and self.merge.ok
        )


def ingest(
    data_dir: Path,
    instance: DagsterInstance,
    *,
    samplesheet: Path | None = None,
    workers: int = 2,
    study: StudyKeys = DEFAULT_STUDY,
) -> IngestReport:
    """Ingest every sample of a study (the default one, or ``study`` of the code location)
    and merge them.

    The study is ``samplesheet`` (or ``samplesheet.csv`` in ``data_dir``), else ``data_dir``
    scanned. Registers a ``samples`` partition per sample, pins the reference gene list if it
    was never pinned, materializes every sample in ``workers`` processes, then materializes
    ``merged_adata`` (which refuses, naming them, if any sample failed).

    Raises
    ------
    SamplesheetError
        If the samplesheet is invalid: nothing is registered, run or written.
    """
    if samplesheet is None and not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: the data folder does not exist")
    scan = scan_inbox(data_dir, samplesheet)
    files = scan.samples
    ignored = [(name, file.reason) for name, file in scan.ignored.items()]
    partitions = study.partitions_name
    known = set(instance.get_dynamic_partitions(partitions))
    new_keys = [key for key in files if key not in known]
    if new_keys:
        instance.add_dynamic_partitions(partitions, new_keys)
    missing = sorted(known - set(files))
    forgotten = samples_to_forget(instance, missing, study)
    for key in forgotten:
        instance.delete_dynamic_partition(partitions, key)
    ignored += [
        (
            key,
            "source file is gone; "
            + (
                "partition dropped (no good data)"
                if key in forgotten
                else "partition and its last sample_adata kept"
            ),
        )
        for key in missing
    ]

    merge_job, sample_job = study.named(MERGE_SAMPLES), study.named(INGEST_SAMPLE)
    if not files:
        return IngestReport([], ignored, merge=execute(merge_job, instance))
    # The workers start (import Dagster and anndata; load the parser's code) while
    # this process hashes the files and pins the reference genes, instead of after.
    run = functools.partial(run_sample, sample_job)
    with WorkerPool(min(workers, len(files)), run, _prepare_worker) as pool:
        observe_sources(instance, list(files.values()), study)
        if instance.get_latest_materialization_event(study.reference_genes) is None:
            reference = execute(study.named(PIN_REFERENCE_GENES), instance)
            if not reference.success:
                failed = [RunOutcome(key, False, error=reference.error) for key in files]
                return IngestReport(failed, ignored, merge=None)
        sizes = {key: sample.size for key, sample in files.items()}
        order = instance.get_dynamic_partitions(partitions)
        batches = plan_batches(order, sizes, workers)
        outcomes: dict[str, RunOutcome] = {}
        while batches:  # again for what a lost worker's batch had not reached
            results = pool.run(batches)
            batches = []
            for batch, result in results.items():
                done, rest = _batch_outcomes(instance, study, batch, result)
                outcomes.update(done)
                if rest:
                    batches.append(rest)
    # The workers exit while the merge runs.
    samples = [outcomes[key] for key in files]
    return IngestReport(samples, ignored, merge=execute(merge_job, instance))


def _batch_outcomes(
    instance: DagsterInstance, study: StudyKeys, batch: tuple[str, ...], result: object
) -> tuple[dict[str, RunOutcome], tuple[str, ...]]:
    """Each sample's outcome from a worker's result, and the samples still to run.

    A lost worker (killed by the out-of-memory killer, ``kill -9``) fails only the sample it
    was building: the samples of its batch stored and checked before it stay so, the run is
    marked failed in the instance, and the samples after it are returned to run again.
    """
    if isinstance(result, dict):
        return result, ()
    if isinstance(result, TaskError):
        error = f"{result.type_name}: {result.message}"
        return {key: RunOutcome(key, False, error=error) for key in batch}, ()
    assert isinstance(result, WorkerLost)
    done: dict[str, RunOutcome] = {}
    for run in instance.get_runs(
        RunsFilter(
            job_name=study.named(INGEST_SAMPLE), tags=batch_tags(batch), statuses=_UNFINISHED
        ),
        limit=1,
    ):
        done = _stored_outcomes(instance, study, run.run_id, batch)
        lost = next((key for key in batch if key not in done), None)
        where = lost or "its batch, after its last sample"
        instance.report_engine_event(f"{result.reason} while running {where}", run)
        instance.report_run_failed(run)
    position = next((i for i, key in enumerate(batch) if key not in done), len(batch))
    if position < len(batch):
        lost = batch[position]
        done[lost] = RunOutcome(lost, False, error=f"{result.reason} while running this sample")
    return done, batch[position + 1 :]


def _stored_outcomes(
    instance: DagsterInstance, study: StudyKeys, run_id: str, batch: Sequence[str]
) -> dict[str, RunOutcome]:
    """The samples of ``batch`` that run ``run_id`` stored with all their checks."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=study.sample_adata, asset_partitions=list(batch)),
        limit=len(batch),
    ).records
    evaluations: dict[str, list[AssetCheckEvaluation]] = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.asset_check_evaluation_data
        evaluations.setdefault(evaluation.partition, []).append(evaluation)
    stored = {}
    for record in records:
        key = str(record.partition_key)
        checks = evaluations.get(key, [])
        if record.run_id == run_id and len(checks) == len(SAMPLE_CHECKS):
            metadata = record.asset_materialization.metadata
            stored[key] = _run_outcome(key, True, metadata, checks, None)
    return stored


_UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def observe_sources(
    instance: DagsterInstance, samples: Sequence[SampleInput], study: StudyKeys = DEFAULT_STUDY
) -> None:
    """Record each sample's data version as that of ``raw_count_matrix``.

    So the sensor, once ``make dev`` starts, knows these bytes were ingested already and does
    not ingest them again.
    """
    seen = observed_sources(instance, [s.partition_key for s in samples], study)
    for sample in samples:
        previous = seen.get(sample.partition_key)
        version, file_hashes = sample_version(sample, previous)
        if previous is None or previous.sha256 != version:
            instance.report_runless_asset_event(
                source_observation(sample, version, file_hashes, study)
            )


def _prepare_worker() -> None:
    """Import what every sample run needs once, before the first sample arrives."""
    import sc_assets.location  # noqa: F401  (the assets, checks, IO managers)
    from sc_assets.core.readers import warm_up

    warm_up()

    _worker_instance()


def run_sample(job_name: str, batch: tuple[str, ...]) -> dict[str, RunOutcome]:
    """Materialize a batch of ``sample_adata`` partitions with the study's sample job
    ``job_name``, in this process (a pool worker)."""
    with _job_result(job_name, _worker_instance(), batch) as result:
        return _sample_outcomes(result, batch)


def execute(
    job_name: str, instance: DagsterInstance, partition_key: str | None = None
) -> RunOutcome:
    """Run a job of the code location in this process (one partition, if given)."""
    keys = (partition_key,) if partition_key else ()
    with _job_result(job_name, instance, keys) as result:
        return _outcome(result, partition_key)


@contextlib.contextmanager
def _job_result(
    job_name: str, instance: DagsterInstance, partition_keys: Sequence[str]
) -> Iterator[JobExecutionResult]:
    """Run a job of the code location in this process, as a run recorded on ``instance``.

    ``execute_job`` rather than ``execute_in_process``: the latter keeps every output in memory
    for its result object, and Dagster holds on to the last one, so a worker would carry the
    previous sample's AnnData (~0.4 GB at full size) while building the next. Dagster's console
    logs are turned down to CRITICAL: the run's events (and any stack trace) are in the
    instance for the UI, and the CLI prints its own summary.
    """
    job = build_reconstructable_job(
        __name__, job_from_environment.__name__, reconstructable_args=(job_name,)
    )
    with execute_job(
        job,
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        tags=batch_tags(partition_keys) if partition_keys else None,
        raise_on_error=False,
    ) as result:
        yield result


def job_from_environment(job_name: str) -> JobDefinition:
    """A job of the code location, built from the environment as it is now.

    Not the module-level Definitions: the CLI's --data-dir and --storage-dir change the
    environment after they may have been imported. A declared study's job comes from the dg
    project of the current folder (see :func:`sc_assets.definitions.project_root_of`).
    """
    from sc_assets.location import build_definitions, project_definitions, project_root_of

    if DEFAULT_STUDY.owns_job(job_name):
        return build_definitions(Settings.from_env()).resolve_job_def(job_name)
    return project_definitions(project_root_of(Path.cwd())).resolve_job_def(job_name)


_instance: DagsterInstance | None = None


def _worker_instance() -> DagsterInstance:
    global _instance
    if _instance is None:
        _instance = DagsterInstance.get()
    return _instance


def _sample_outcomes(result: JobExecutionResult, batch: Sequence[str]) -> dict[str, RunOutcome]:
    """Each sample's outcome in a run of one or several samples, from the run's events."""
    metadata = {
        str(event.materialization.partition): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    evaluations: dict[str, list[AssetCheckEvaluation]] = {}
    for evaluation in result.get_asset_check_evaluations():
        evaluations.setdefault(str(evaluation.partition), []).append(evaluation)
    errors = run_errors(e.step_failure_data for e in result.all_events if e.is_step_failure)
    return {
        key: _run_outcome(
            key,
            key in metadata,
            metadata.get(key),
            evaluations.get(key, []),
            None if key in metadata else errors.for_sample(key) or "run failed",
        )
        for key in batch
    }


def _outcome(result: JobExecutionResult, partition_key: str | None) -> RunOutcome:
    """The outcome of a run of one job (the pin, the merge), from its events."""
    materializations = result.get_asset_materialization_events()
    errors = run_errors(e.step_failure_data for e in result.all_events if e.is_step_failure)
    return _run_outcome(
        partition_key,
        result.success,
        materializations[-1].materialization.metadata if materializations else None,
        result.get_asset_check_evaluations(),
        errors.for_sample(None) or (None if result.success else "run failed"),
    )


def _run_outcome(
    key: str | None,
    success: bool,
    metadata: Mapping[str, Any] | None,
    evaluations: Sequence[AssetCheckEvaluation],
    error: str | None,
) -> RunOutcome:
    """An outcome from a materialization's metadata and its check evaluations."""
    failed: dict[str, str] = {}
    warnings: dict[str, str] = {}
    for evaluation in evaluations:
        if not evaluation.passed:
            target = failed if evaluation.severity.value == Severity.ERROR else warnings
            target[evaluation.check_name] = evaluation.description or "failed"
    return RunOutcome(
        partition_key=key,
        success=success,
        summary={k: metadata[k].value for k in SUMMARY_KEYS if k in metadata} if metadata else {},
        failed_checks=failed,
        warnings=warnings,
        error=error,
    )


def configure_environment(
    data_dir: Path | UPath | None,
    storage_dir: str | None,
    samplesheet: Path | UPath | None = None,
) -> None:
    """Point this process and the workers it starts at the given study and storage (CLI flags)."""
    if data_dir is not None:
        os.environ["SC_ASSETS_DATA_DIR"] = str(location(str(data_dir)))
    if samplesheet is not None:
        os.environ["SC_ASSETS_SAMPLESHEET"] = str(location(str(samplesheet)))
    if storage_dir is not None:
        absolute = storage_dir if "://" in storage_dir else str(Path(storage_dir).absolute())
        os.environ["SC_ASSETS_STORAGE_DIR"] = absolute
