"""``nightly_reingest``: reconcile the study (samplesheet or data folder) with what was ingested.

Whatever the sensor missed (it was off, a run failed, a file changed in place) is caught here:
every sample is registered, the reference gene list is pinned if it never was, and a sample
is re-ingested when it was never materialized or its content differs from the last observed
version. When no sample needs a run but
``merged_adata`` is missing or older than the newest sample, the merge is requested; otherwise
the sample runs trigger the merge through its automation condition.
"""

import datetime

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from sc_assets.core.samplesheet import SamplesheetError
from sc_assets.jobs import MERGE_RUN_TAGS, build_jobs
from sc_assets.sources import observed_sources, sample_version, source_observation
from sc_assets.study import DEFAULT_STUDY, StudyKeys


def build_nightly_reingest(cron: str, timezone: str, study: StudyKeys = DEFAULT_STUDY):
    """The study's schedule, on ``cron`` (``SC_ASSETS_REINGEST_CRON``) in ``timezone``."""
    inbox_key = study.named("inbox")
    partitions = study.partitions_name
    sample_adata, merged_adata = study.sample_adata, study.merged_adata
    reference_genes = study.reference_genes

    @schedule(
        name=study.named("nightly_reingest"),
        cron_schedule=cron,
        execution_timezone=timezone,
        job=build_jobs(study).reingest,
        required_resource_keys={inbox_key},
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            "Nightly reconciliation: registers every valid file, re-ingests samples that were "
            "never materialized or whose content changed, and refreshes merged_adata."
        ),
    )
    def nightly_reingest(context: ScheduleEvaluationContext, **resources):
        instance = context.instance
        # As keyword arguments when called directly, through the context from the daemon.
        inbox = resources.get(inbox_key) or getattr(context.resources, inbox_key)
        try:
            scan = inbox.scan()
        except FileNotFoundError as error:  # no data folder (yet): nothing changes
            return SkipReason(f"{error.filename}: no such folder or file (yet)")
        except SamplesheetError as error:
            return SkipReason(f"the samplesheet is invalid, nothing changes:\n{error}")
        known = set(instance.get_dynamic_partitions(partitions))
        new_keys = [key for key in scan.samples if key not in known]
        if new_keys:
            instance.add_dynamic_partitions(partitions, new_keys)
        when = context.scheduled_execution_time or datetime.datetime.now(datetime.UTC)
        tick = when.strftime("%Y%m%dT%H%M")
        if scan.samples and instance.get_latest_materialization_event(reference_genes) is None:
            # Samples are checked against the pinned gene list: pin it first. The sensor (on
            # by default) then ingests the samples; otherwise the next night does.
            return [RunRequest(run_key=f"nightly:{tick}:pin", asset_selection=[reference_genes])]
        materialized = instance.get_materialized_partitions(sample_adata)
        observed = observed_sources(instance, scan.samples, study)

        requests = []
        for key, sample in scan.samples.items():
            seen = observed.get(key)
            if key in materialized and seen is not None and seen.signature == sample.signature:
                continue  # same sizes, mtimes and sheet row as when last hashed: unchanged
            version, file_hashes = sample_version(sample, seen)
            if key in materialized and seen is not None and seen.sha256 == version:
                continue
            instance.report_runless_asset_event(
                source_observation(sample, version, file_hashes, study)
            )
            requests.append(
                RunRequest(
                    run_key=f"nightly:{tick}:{key}",
                    partition_key=key,
                    asset_selection=[sample_adata],
                    tags={"sc_assets/source_sha256": version},
                )
            )
        if requests:
            return requests
        if _merge_outdated(context, merged_adata, sample_adata):
            return [
                RunRequest(
                    run_key=f"nightly:{tick}:merge",
                    asset_selection=[merged_adata],
                    tags=MERGE_RUN_TAGS,
                )
            ]
        return SkipReason(f"all {len(scan.samples)} samples and merged_adata are up to date")

    return nightly_reingest


def _merge_outdated(
    context: ScheduleEvaluationContext, merged_adata: AssetKey, sample_adata: AssetKey
) -> bool:
    """merged_adata is missing, or some sample was materialized after it."""
    merged, newest_sample = (
        _latest_storage_id(context, key) for key in (merged_adata, sample_adata)
    )
    if newest_sample is None:
        return False
    return merged is None or newest_sample > merged


def _latest_storage_id(context: ScheduleEvaluationContext, key: AssetKey) -> int | None:
    records = context.instance.fetch_materializations(key, limit=1).records
    return records[0].storage_id if records else None
