"""``nightly_reingest``: reconcile the input folder with what has been ingested.

Whatever the sensor missed (it was off, a run failed, a file changed in place) is caught here:
every valid file is registered, and a sample is re-ingested when it was never materialized or
its content differs from the last observed version. When no sample needs a run but
``merged_adata`` is missing or older than the newest sample, the merge is requested; otherwise
the sample runs trigger the merge through its automation condition.
"""

import datetime

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from sc_assets.checks import MERGED_ADATA, SAMPLE_ADATA
from sc_assets.core.inbox import content_hash, scan_inbox
from sc_assets.jobs import reingest_job
from sc_assets.partitions import SAMPLES_PARTITIONS_NAME
from sc_assets.resources import SampleInbox
from sc_assets.sources import observed_sources, source_observation


def build_nightly_reingest(cron: str, timezone: str):
    """The schedule, on ``cron`` (``SC_ASSETS_REINGEST_CRON``) in ``timezone``."""

    @schedule(
        name="nightly_reingest",
        cron_schedule=cron,
        execution_timezone=timezone,
        job=reingest_job,
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            "Nightly reconciliation: registers every valid file, re-ingests samples that were "
            "never materialized or whose content changed, and refreshes merged_adata."
        ),
    )
    def nightly_reingest(context: ScheduleEvaluationContext, inbox: SampleInbox):
        instance = context.instance
        scan = scan_inbox(inbox.data_dir)
        known = set(instance.get_dynamic_partitions(SAMPLES_PARTITIONS_NAME))
        new_keys = [key for key in scan.samples if key not in known]
        if new_keys:
            instance.add_dynamic_partitions(SAMPLES_PARTITIONS_NAME, new_keys)
        materialized = instance.get_materialized_partitions(SAMPLE_ADATA)
        observed = observed_sources(instance, scan.samples)
        when = context.scheduled_execution_time or datetime.datetime.now(datetime.UTC)
        tick = when.strftime("%Y%m%dT%H%M")

        requests = []
        for key, file in scan.samples.items():
            seen = observed.get(key)
            if key in materialized and seen is not None and seen.signature == file.signature:
                continue  # same size and mtime as when last hashed: unchanged
            sha256 = content_hash(file.path)
            if key in materialized and seen is not None and seen.sha256 == sha256:
                continue
            instance.report_runless_asset_event(source_observation(file, sha256))
            requests.append(
                RunRequest(
                    run_key=f"nightly:{tick}:{key}",
                    partition_key=key,
                    asset_selection=[SAMPLE_ADATA],
                    tags={"sc_assets/source_sha256": sha256},
                )
            )
        if requests:
            return requests
        if _merge_outdated(context):
            return [RunRequest(run_key=f"nightly:{tick}:merge", asset_selection=[MERGED_ADATA])]
        return SkipReason(f"all {len(scan.samples)} samples and merged_adata are up to date")

    return nightly_reingest


def _merge_outdated(context: ScheduleEvaluationContext) -> bool:
    instance = context.instance
    merged = instance.get_latest_materialization_event(MERGED_ADATA)
    if merged is None:
        return bool(instance.get_materialized_partitions(SAMPLE_ADATA))
    newest_sample = instance.get_latest_materialization_event(SAMPLE_ADATA)
    return newest_sample is not None and newest_sample.storage_id > merged.storage_id
