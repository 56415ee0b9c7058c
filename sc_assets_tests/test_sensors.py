import os
import shutil
import time
from pathlib import Path

import pytest
from dagster import (
    AssetMaterialization,
    DagsterRun,
    DeleteDynamicPartitionsRequest,
    SensorResult,
    build_sensor_context,
)
from dagster import DagsterRunStatus as Status
from dagster._core.storage.tags import RUN_FAILURE_REASON_TAG, WILL_RETRY_TAG

from sc_assets.batches import batch_keys
from sc_assets.resources import SampleInbox
from sc_assets.sample_status import sample_statuses
from sc_assets.sensors import build_new_samples_sensor
from sc_assets_tests.conftest import run, write_sample

SENSOR = build_new_samples_sensor(interval_seconds=30)


class Ticker:
    """Evaluates the sensor like the daemon does: carries the cursor, applies its requests."""

    def __init__(self, instance, data_dir, samplesheet=None):
        self.instance, self.data_dir, self.cursor = instance, data_dir, None
        self.samplesheet = samplesheet

    def tick(self) -> SensorResult:
        inbox = SampleInbox(
            data_dir=str(self.data_dir),
            samplesheet=str(self.samplesheet) if self.samplesheet else None,
        )
        with build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"inbox": inbox}
        ) as context:
            result = SENSOR(context)
        self.cursor = result.cursor
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, DeleteDynamicPartitionsRequest):
                for key in request.partition_keys:
                    self.instance.delete_dynamic_partition(request.partitions_def_name, key)
            else:
                self.instance.add_dynamic_partitions(
                    request.partitions_def_name, list(request.partition_keys)
                )
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        return result


@pytest.fixture
def ticker(instance, settings):
    # Samples are checked against a pinned reference: pretend it is pinned.
    instance.report_runless_asset_event(AssetMaterialization("reference_genes"))
    return Ticker(instance, settings.data_dir)


def age(path, seconds=120):
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


def reason(result) -> str:
    return result.skip_reason.skip_message if result.skip_reason else ""


def partition_keys(result):
    return sorted(r.partition_key for r in result.run_requests)


def test_new_files_become_partitions_and_runs(ticker, settings, instance):
    for key in ["GSM5320459_Ctrl1", "GSM5320460_Ctrl2"]:
        age(write_sample(settings.data_dir, key))
    result = ticker.tick()
    assert partition_keys(result) == ["GSM5320459_Ctrl1", "GSM5320460_Ctrl2"]
    assert {r.job_name for r in result.run_requests} == {"ingest_sample"}
    assert sorted(instance.get_dynamic_partitions("samples")) == [
        "GSM5320459_Ctrl1",
        "GSM5320460_Ctrl2",
    ]
    # raw_count_matrix is observed with the content hash as its data version
    assert len(result.asset_events) == 2
    assert all(len(e.tags["dagster/data_version"]) == 64 for e in result.asset_events)


def test_nothing_changed_nothing_requested(ticker, settings):
    age(write_sample(settings.data_dir, "GSM5320459_Ctrl1"))
    assert len(ticker.tick().run_requests) == 1
    result = ticker.tick()
    assert result.run_requests == []
    assert reason(result) == "no new or changed samples"


def test_a_replaced_file_runs_exactly_once_and_a_same_content_copy_never(ticker, settings):
    path = age(write_sample(settings.data_dir, "GSM5320459_Ctrl1", seed=1))
    first = ticker.tick()
    assert len(first.run_requests) == 1

    shutil.copy(path, settings.data_dir / "copy.bin")
    os.replace(settings.data_dir / "copy.bin", path)  # same bytes copied over it
    age(path)
    same = ticker.tick()
    assert same.run_requests == []
    assert "unchanged (same content)" in reason(same)

    age(write_sample(settings.data_dir, "GSM5320459_Ctrl1", seed=2))  # new content
    replaced = ticker.tick()
    assert partition_keys(replaced) == ["GSM5320459_Ctrl1"]
    assert replaced.run_requests[0].run_key != first.run_requests[0].run_key
    assert ticker.tick().run_requests == []


@pytest.mark.parametrize(
    "name",
    [
        "GSM5320459_Ctrl1_count_matrix.csv.gz.part",
        "GSM5320459_Ctrl1_count_matrix.csv.gz.tmp",
        ".GSM5320459_Ctrl1_count_matrix.csv.gz",
        "GSM5320459 Ctrl1_count_matrix.csv.gz",
        "../etc_count_matrix.csv.gz".replace("/", "_"),
        "README.md",
    ],
)
def test_partial_hidden_and_badly_named_files_are_ignored(ticker, settings, instance, name):
    path = write_sample(settings.data_dir, "GSM5320459_Ctrl1")
    os.replace(path, settings.data_dir / name)
    result = ticker.tick()
    assert result.run_requests == []
    assert instance.get_dynamic_partitions("samples") == []
    assert f"ignored {name}" in reason(result)  # reported, once
    assert f"ignored {name}" not in reason(ticker.tick())


def test_a_file_still_growing_is_not_ingested_yet(ticker, settings):
    path = settings.data_dir / "GSM5320459_Ctrl1_count_matrix.csv.gz"
    path.write_bytes(b"\x1f\x8b partial")  # fresh and incomplete
    assert ticker.tick().run_requests == []
    with open(path, "ab") as f:
        f.write(b" more bytes")
    assert ticker.tick().run_requests == []  # size changed since the last tick
    assert partition_keys(ticker.tick()) == ["GSM5320459_Ctrl1"]  # stable: now


def test_reference_genes_are_pinned_before_the_first_samples(instance, settings):
    ticker = Ticker(instance, settings.data_dir)  # no reference_genes yet
    age(write_sample(settings.data_dir, "GSM5320460_Ctrl2"))
    age(write_sample(settings.data_dir, "GSM5320459_Ctrl1"))
    first = ticker.tick()
    assert [r.job_name for r in first.run_requests] == ["pin_reference_genes"]
    assert sorted(instance.get_dynamic_partitions("samples")) == [
        "GSM5320459_Ctrl1",
        "GSM5320460_Ctrl2",
    ]
    instance.report_runless_asset_event(AssetMaterialization("reference_genes"))
    second = ticker.tick()
    assert partition_keys(second) == ["GSM5320459_Ctrl1", "GSM5320460_Ctrl2"]


def test_a_deleted_source_with_good_data_keeps_its_partition(platform, instance, settings):
    instance.add_dynamic_partitions("samples", ["GSM5320459_Ctrl1"])
    age(write_sample(settings.data_dir, "GSM5320459_Ctrl1"))
    assert run(platform, "pin_reference_genes").success
    assert run(platform, "ingest_sample", "GSM5320459_Ctrl1").success
    ticker = Ticker(instance, settings.data_dir)
    ticker.tick()
    (settings.data_dir / "GSM5320459_Ctrl1_count_matrix.csv.gz").unlink()
    result = ticker.tick()
    assert result.run_requests == []
    assert "GSM5320459_Ctrl1 is missing: partition and its last sample_adata are kept" in (
        reason(result)
    )
    assert instance.get_dynamic_partitions("samples") == ["GSM5320459_Ctrl1"]
    assert Path(settings.storage_dir, "sample_adata", "GSM5320459_Ctrl1.h5ad").exists()


def test_a_deleted_source_without_good_data_is_forgotten(ticker, settings, instance):
    path = age(write_sample(settings.data_dir, "GSM5320459_Ctrl1"))
    ticker.tick()  # registered, but its run never succeeded
    path.unlink()
    result = ticker.tick()
    assert "partition dropped (no good data to keep)" in reason(result)
    assert instance.get_dynamic_partitions("samples") == []


def test_files_ingested_by_the_cli_are_not_ingested_again(platform, settings, demo_files):
    from sc_assets.ingest import ingest

    key = "GSM5320459_Ctrl1"
    age(shutil.copy(demo_files[key], settings.data_dir / demo_files[key].name))
    assert ingest(settings.data_dir, platform.instance, workers=1).ok  # a one-sample merge too
    result = Ticker(platform.instance, settings.data_dir).tick()  # `make dev` starts later
    assert result.run_requests == []
    assert "unchanged (same content)" in reason(result)


def test_a_pin_that_failed_on_the_data_is_asked_for_again_when_samples_change(instance, settings):
    ticker = Ticker(instance, settings.data_dir)  # nothing pinned yet
    age(write_sample(settings.data_dir, "GSM5320459_Ctrl1"))
    first = ticker.tick()
    [pin] = first.run_requests
    assert pin.job_name == "pin_reference_genes"
    failure = {RUN_FAILURE_REASON_TAG: "STEP_FAILURE", WILL_RETRY_TAG: "false", **pin.tags}
    instance.add_run(DagsterRun(job_name=pin.job_name, status=Status.FAILURE, tags=failure))
    assert ticker.tick().run_requests == []  # the same samples would fail it again: no loop
    age(write_sample(settings.data_dir, "GSM5320460_Ctrl2"))
    [again] = ticker.tick().run_requests  # a new sample: the inbox does not stall
    assert again.job_name == "pin_reference_genes"
    assert again.run_key.startswith("reference_genes:after:")


def test_a_sample_whose_run_process_died_is_asked_for_again(ticker, instance):
    ticker.tick()
    tags = {
        "dagster/partition": "GSM5320459_Ctrl1",
        RUN_FAILURE_REASON_TAG: "UNEXPECTED_TERMINATION",
        WILL_RETRY_TAG: "false",  # Dagster's own retries are spent
    }
    run = instance.add_run(DagsterRun(job_name="ingest_sample", status=Status.FAILURE, tags=tags))
    result = ticker.tick()
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        ("GSM5320459_Ctrl1", f"recover:{run.run_id}")
    ]
    assert ticker.tick().run_requests == []


def test_samples_landed_together_are_ingested_in_batches(ticker, settings, instance, platform):
    keys = [f"GSM53204{59 + i}_Ctrl{i + 1}" for i in range(7)]
    for i, key in enumerate(keys):
        age(write_sample(settings.data_dir, key, seed=i))
    result = ticker.tick()
    # One run per slot of the run queue, each a range of neighbours in partition order.
    order = instance.get_dynamic_partitions("samples")
    assert order == keys
    batches = [batch_keys(order, r.tags) for r in result.run_requests]
    assert sorted(map(len, batches)) == [3, 4]
    assert sorted(key for batch in batches for key in batch) == keys
    assert all(
        r.partition_key is None and r.job_name == "ingest_sample" for r in result.run_requests
    )
    assert len({r.run_key for r in result.run_requests}) == 2
    # The requests as the daemon launches them: every sample materialized and checked.
    assert run(platform, "pin_reference_genes").success
    for request in result.run_requests:
        job = platform.defs.resolve_job_def(request.job_name)
        assert job.execute_in_process(instance=instance, tags=request.tags).success
    statuses = sample_statuses(instance, keys)
    assert [key for key in keys if statuses[key].blocked] == []
    # The same files again: nothing to do.
    assert ticker.tick().run_requests == []


def test_an_instance_of_another_storage_folder_or_study_ingests_nothing(instance, settings):
    from dagster import MetadataValue

    from sc_assets.binding import study_name

    age(write_sample(settings.data_dir, "GSM5320459_Ctrl1"))
    pinned = Path(settings.storage_dir) / "reference_genes.txt"
    study = study_name(str(settings.data_dir), None)
    instance.report_runless_asset_event(
        AssetMaterialization(
            "reference_genes", metadata={"path": MetadataValue.path(str(pinned)), "study": study}
        )
    )
    ticker = Ticker(instance, settings.data_dir)

    def tick_with(storage_dir):
        sensor = build_new_samples_sensor(interval_seconds=30, storage_dir=storage_dir)
        with build_sensor_context(
            instance=instance, resources={"inbox": SampleInbox(data_dir=str(ticker.data_dir))}
        ) as context:
            return sensor(context)

    moved = tick_with(str(Path(settings.storage_dir).parent / "elsewhere"))
    assert moved.run_requests == [] and moved.dynamic_partitions_requests == []
    assert f"keeps this study's files in {settings.storage_dir}, not in" in reason(moved)
    ticker.data_dir = settings.data_dir.parent / "other_data"
    other_study = tick_with(settings.storage_dir)
    assert other_study.run_requests == []
    assert f"holds the study of the {study}, not of the data folder" in reason(other_study)
    ticker.data_dir = settings.data_dir
    assert partition_keys(tick_with(settings.storage_dir)) == ["GSM5320459_Ctrl1"]


def test_a_data_folder_that_does_not_exist_yet_is_a_skip_not_an_error(instance, tmp_path):
    ticker = Ticker(instance, tmp_path / "not_yet")
    result = ticker.tick()
    assert result.run_requests == [] and not result.dynamic_partitions_requests
    assert reason(result) == f"{tmp_path / 'not_yet'}: no such folder or file (yet)"
