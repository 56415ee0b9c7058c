"""``new_samples_sensor``: ingest samples as they land in the study.

Each tick lists the study once (its samplesheet, or its data folder), looks only at samples
whose files' inode changed since the last tick, or all of them when the samplesheet changed
(see :func:`sc_assets.core.inbox.inbox_changes`), waits for files still being written, and
compares each ready sample's data version (files and samplesheet row) with the last observed
one of ``raw_count_matrix``: a new or changed sample gets a ``samples`` partition (if new), an
observation and exactly one ``ingest_sample`` run; the same bytes copied again, or a sheet
edit that leaves a row as it was, get nothing. Files are hashed only when their stat changed.
Ignored entries, vanished sources and an invalid samplesheet are logged once; a bad sheet
changes nothing.
"""

import hashlib
import os
import time
from dataclasses import replace

from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from sc_assets.batches import batch_tags, plan_batches
from sc_assets.binding import binding_conflict, study_name
from sc_assets.core.inbox import InboxCursor, SampleInput, inbox_changes
from sc_assets.core.samplesheet import SamplesheetError
from sc_assets.jobs import build_jobs
from sc_assets.recovery import pin_request, recoveries
from sc_assets.resources import SampleInbox
from sc_assets.sample_status import samples_to_forget
from sc_assets.sources import observed_sources, sample_version, source_observation
from sc_assets.study import DEFAULT_STUDY, StudyKeys

#: Files released per tick; the rest wait for the next tick, so a flood of files cannot make
#: one tick hash gigabytes.
MAX_FILES_PER_TICK = 100


def run_slots(instance: DagsterInstance) -> int:
    """Runs the instance runs at once (its queue's ``max_concurrent_runs``; unlimited or no
    queue: the cores): a tick's new samples go into this many batches, one per slot."""
    queue = instance.get_concurrency_config().run_queue_config
    if queue is None or queue.max_concurrent_runs < 1:
        return os.cpu_count() or 1
    return queue.max_concurrent_runs


def build_new_samples_sensor(
    interval_seconds: int, storage_dir: str | None = None, study: StudyKeys = DEFAULT_STUDY
):
    """The study's sensor, ticking every ``interval_seconds`` (``SC_ASSETS_SENSOR_INTERVAL``).

    Given the ``storage_dir`` the code location writes to, a tick first checks that the
    instance belongs to that folder and this study (:mod:`sc_assets.binding`) and otherwise
    does nothing but say why.
    """

    jobs = build_jobs(study)
    sample_job, reference_job = jobs.sample, jobs.reference
    inbox_key, partitions = study.named("inbox"), study.partitions

    @sensor(
        name=study.named("new_samples_sensor"),
        jobs=[sample_job, reference_job],
        required_resource_keys={inbox_key},
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Watches the study (its samplesheet, or SC_ASSETS_DATA_DIR): a new or changed "
            "sample (files or samplesheet row) gets a samples partition and one ingest_sample "
            "run (run key = data version). Hidden, partial (.part/.tmp), still-growing and "
            "unrecognised files are not ingested and are reported once; an invalid "
            "samplesheet is reported once with all its problems and changes nothing."
        ),
    )
    def new_samples_sensor(context: SensorEvaluationContext, **resources) -> SensorResult:
        # Dagster hands required resources over as keyword arguments when a test calls the
        # sensor directly, and through the context when the daemon evaluates it.
        inbox: SampleInbox = resources.get(inbox_key) or getattr(context.resources, inbox_key)
        instance = context.instance
        cursor = InboxCursor.from_json(context.cursor)
        if storage_dir is not None:
            conflict = binding_conflict(
                instance,
                study,
                storage_dir=storage_dir,
                study=study_name(inbox.data_dir, inbox.samplesheet),
                home=os.environ.get("DAGSTER_HOME", "?"),
            )
            if conflict is not None:
                return SensorResult(skip_reason=conflict)
        try:
            scan = inbox.scan()
        except FileNotFoundError as error:  # no data folder (yet): nothing changes
            return SensorResult(skip_reason=f"{error.filename}: no such folder or file (yet)")
        except SamplesheetError as error:
            digest = hashlib.sha256(str(error).encode()).hexdigest()[:16]
            if digest != cursor.sheet_error:
                context.log.error(f"the samplesheet is not used, nothing changes:\n{error}")
            return SensorResult(
                cursor=replace(cursor, sheet_error=digest).to_json(),
                skip_reason=f"invalid samplesheet ({len(error.problems)} problems): see the log",
            )
        known = set(instance.get_dynamic_partitions(partitions.name))
        changes = inbox_changes(
            scan,
            cursor,
            known_keys=known,
            now_ns=time.time_ns(),
            settle_ns=interval_seconds * 1_000_000_000,
            max_ready=MAX_FILES_PER_TICK,
        )
        notes = [f"ignored {f.name}: {f.reason}" for f in changes.new_ignored]
        forgotten = samples_to_forget(instance, changes.newly_missing, study)
        notes += [
            f"source of {key} is missing: "
            + (
                "partition dropped (no good data to keep)"
                if key in forgotten
                else "partition and its last sample_adata are kept"
            )
            for key in changes.newly_missing
        ]
        notes += [f"{s.path.name} is still being written" for s in changes.settling]
        if changes.deferred:
            notes.append(
                f"{len(changes.deferred)} more files wait for the next ticks "
                f"(at most {MAX_FILES_PER_TICK} per tick)"
            )
        cursor = changes.cursor

        new_keys = [f.partition_key for f in changes.ready if f.partition_key not in known]
        if instance.get_latest_materialization_event(study.reference_genes) is None and (
            changes.ready or known
        ):
            # Samples are compared with the pinned reference: pin it first, ingest next tick.
            held = {f.partition_key: f.signature for f in changes.ready}
            cursor = replace(cursor, settling={**cursor.settling, **held})
            inputs = sorted(f"{k}:{s.signature}" for k, s in scan.samples.items())
            digest = hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:16]
            pin = pin_request(instance, reference_job.name, min([*known, *new_keys]), digest)
            if pin is None:
                notes.append("waiting for reference_genes to be pinned before ingesting samples")
            else:
                notes.append("pinning reference_genes before ingesting samples")
            requests = (
                []
                if pin is None
                else [RunRequest(run_key=pin[0], job_name=reference_job.name, tags=pin[1])]
            )
            return _result(
                context,
                partitions,
                notes,
                run_requests=requests,
                new_keys=new_keys,
                forgotten=forgotten,
                cursor=cursor,
            )

        run_requests = []
        since = cursor.failures_since or float(int(time.time()))  # a new cursor: from now on
        found, since, seen = recoveries(instance, [sample_job.name], since, cursor.failures_seen)
        cursor = replace(cursor, failures_since=since, failures_seen=seen)
        for recovery in found:
            notes.append(
                f"{recovery.partition_key}: its run {recovery.run.run_id[:8]} failed "
                f"({recovery.reason}); asking again (attempt {recovery.attempt})"
            )
            run_requests.append(
                RunRequest(
                    run_key=recovery.run_key,
                    job_name=sample_job.name,
                    partition_key=recovery.partition_key,
                    tags=recovery.tags,
                )
            )

        previous = observed_sources(instance, [s.partition_key for s in changes.ready], study)
        observations, to_run = [], {}
        for sample in changes.ready:
            seen = previous.get(sample.partition_key)
            try:
                version, file_hashes = sample_version(sample, seen)
            except OSError as error:  # vanished or unreadable since the scan: next tick
                notes.append(f"cannot read {sample.path.name}: {error}")
                continue
            if seen is not None and seen.sha256 == version:
                notes.append(f"{sample.partition_key} unchanged (same content): nothing to do")
                continue
            observations.append(source_observation(sample, version, file_hashes, study))
            to_run[sample.partition_key] = (sample, version)
        # Samples landed together are ingested in batches (one run per partition range):
        # a run and its process cost seconds, which small samples would pay one by one.
        order = [*instance.get_dynamic_partitions(partitions.name), *new_keys]
        sizes = {key: sample.size for key, (sample, _) in to_run.items()}
        for batch in plan_batches(order, sizes, run_slots(instance), batches_per_worker=1):
            run_requests.append(_sample_request(sample_job.name, [to_run[key] for key in batch]))
        return _result(
            context,
            partitions,
            notes,
            run_requests=run_requests,
            new_keys=new_keys,
            forgotten=forgotten,
            cursor=cursor,
            observations=observations,
        )

    return new_samples_sensor


def _sample_request(job_name: str, samples: list[tuple[SampleInput, str]]) -> RunRequest:
    """One run for these samples (neighbours in partition order); its key names their data."""
    if len(samples) == 1:
        sample, version = samples[0]
        return RunRequest(
            run_key=f"{sample.partition_key}:{version[:16]}:{sample.ctime_ns}",
            job_name=job_name,
            partition_key=sample.partition_key,
            tags={"sc_assets/source_sha256": version},
        )
    keys = [sample.partition_key for sample, _ in samples]
    identity = "\n".join(f"{s.partition_key}:{v}:{s.ctime_ns}" for s, v in samples)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return RunRequest(
        run_key=f"{keys[0]}..{keys[-1]}:{digest}",
        job_name=job_name,
        tags=batch_tags(keys),
    )


def _result(
    context, partitions, notes, *, run_requests, new_keys, forgotten, cursor, observations=()
) -> SensorResult:
    for note in notes:
        context.log.info(note)
    partition_requests = []
    if new_keys:
        partition_requests.append(partitions.build_add_request(new_keys))
    if forgotten:
        partition_requests.append(partitions.build_delete_request(forgotten))
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=partition_requests,
        asset_events=list(observations),
        cursor=cursor.to_json(),
        skip_reason=None if run_requests else ("; ".join(notes) or "no new or changed samples"),
    )
