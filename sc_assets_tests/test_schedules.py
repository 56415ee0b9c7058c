"""nightly_reingest reconciles the inbox with what was ingested."""

import datetime

from dagster import AssetKey, RunRequest, SkipReason, build_schedule_context

from sc_assets.resources import SampleInbox
from sc_assets.schedules import build_nightly_reingest
from sc_assets_tests.conftest import copy_samples, ingest, run

SCHEDULE = build_nightly_reingest("0 2 * * *", "UTC")
KEYS = ["GSM5320459_Ctrl1", "GSM5320460_Ctrl2"]


def evaluate(platform):
    when = datetime.datetime(2026, 11, 25, 2, 0, tzinfo=datetime.UTC)
    with build_schedule_context(
        instance=platform.instance,
        scheduled_execution_time=when,
        resources={"inbox": SampleInbox(data_dir=str(platform.settings.data_dir))},
    ) as context:
        return SCHEDULE(context)


def requested(result) -> list[tuple[str | None, list[str]]]:
    assert not isinstance(result, SkipReason), result.skip_message
    return [(r.partition_key, [k.to_user_string() for k in r.asset_selection]) for r in result]


def test_pins_genes_then_ingests_what_was_never_materialized(platform, demo_files):
    copy_samples(demo_files, platform.settings.data_dir, KEYS)
    assert requested(evaluate(platform)) == [(None, ["reference_genes"])]
    assert sorted(platform.instance.get_dynamic_partitions("samples")) == KEYS
    assert run(platform, "pin_reference_genes").success
    result = evaluate(platform)
    assert requested(result) == [(key, ["sample_adata"]) for key in KEYS]
    assert all(isinstance(r, RunRequest) and r.run_key.startswith("nightly:") for r in result)
    assert sorted(platform.instance.get_dynamic_partitions("samples")) == KEYS


def test_only_changed_content_is_reingested_then_the_merge_refreshed(platform, demo_files):
    copy_samples(demo_files, platform.settings.data_dir, KEYS)
    platform.instance.add_dynamic_partitions("samples", KEYS)
    assert run(platform, "pin_reference_genes").success
    # First night: observe and ingest both, merge.
    for request in evaluate(platform):
        assert run(platform, "ingest_sample", request.partition_key).success
    assert run(platform, "merge_samples").success
    skip = evaluate(platform)
    assert isinstance(skip, SkipReason)
    assert "all 2 samples and merged_adata are up to date" in skip.skip_message

    # A file is replaced by other content: only it is re-ingested.
    copy_samples({KEYS[0]: demo_files["GSM5320461_Ctrl3"]}, platform.settings.data_dir)
    (platform.settings.data_dir / demo_files["GSM5320461_Ctrl3"].name).rename(
        platform.settings.data_dir / f"{KEYS[0]}_count_matrix.csv.gz"
    )
    assert requested(evaluate(platform)) == [(KEYS[0], ["sample_adata"])]

    # Once it ran, nothing is to ingest, but the merge is older than the newest sample.
    assert run(platform, "ingest_sample", KEYS[0]).success
    merge_requests = evaluate(platform)
    assert requested(merge_requests) == [(None, ["merged_adata"])]
    assert merge_requests[0].tags["dagster-celery/queue"] == "merge"  # a big-disk worker's


def test_the_merge_request_runs_in_the_schedules_job(platform, demo_files):
    copy_samples(demo_files, platform.settings.data_dir, KEYS)
    ingest(platform, KEYS)
    # The schedule's job holds both assets; a request without a partition selects the merge.
    result = platform.defs.resolve_job_def("reingest").execute_in_process(
        instance=platform.instance, asset_selection=[AssetKey("merged_adata")]
    )
    assert result.success
    assert len(result.get_asset_materialization_events()) == 1
