"""The sensor follows a samplesheet: new rows, changed files or cells, removed rows, bad sheets."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from dagster import AssetMaterialization

from sc_assets_tests.conftest import write_sample
from sc_assets_tests.test_sensors import Ticker, age, partition_keys, reason

HEADER = "sample,path,condition,donor"


@pytest.fixture
def sheet_ticker(instance, settings) -> Ticker:
    instance.report_runless_asset_event(AssetMaterialization("reference_genes"))
    return Ticker(instance, settings.data_dir, samplesheet=settings.data_dir / "study.csv")


def logged(capfd) -> str:
    """What the sensor's log printed since the last call (Dagster logs to stderr)."""
    return capfd.readouterr().err


def write_sheet(sheet: Path, *rows: str) -> None:
    tmp = sheet.with_name(".sheet.tmp")
    tmp.write_text("\n".join([HEADER, *rows]) + "\n")
    os.replace(tmp, sheet)  # as an editor saves: the sheet is replaced whole
    age(sheet)


def test_rows_become_partitions_and_runs(sheet_ticker, settings, instance):
    for key in ["a", "b"]:
        age(write_sample(settings.data_dir, key))
    write_sheet(
        sheet_ticker.samplesheet,
        "s1,a_count_matrix.csv.gz,Ctrl,1",
        "s2,b_count_matrix.csv.gz,Pre,1",
    )
    first = sheet_ticker.tick()
    assert partition_keys(first) == ["s1", "s2"]
    assert sorted(instance.get_dynamic_partitions("samples")) == ["s1", "s2"]
    versions = {e.partition: e.tags["dagster/data_version"] for e in first.asset_events}
    assert set(versions) == {"s1", "s2"} and len(versions["s1"]) == 64
    assert sheet_ticker.tick().run_requests == []

    # a new row: one new partition and run, nothing else
    age(write_sample(settings.data_dir, "c"))
    write_sheet(
        sheet_ticker.samplesheet,
        "s1,a_count_matrix.csv.gz,Ctrl,1",
        "s2,b_count_matrix.csv.gz,Pre,1",
        "s3,c_count_matrix.csv.gz,Post,1",
    )
    added = sheet_ticker.tick()
    assert partition_keys(added) == ["s3"]

    # a changed metadata cell re-ingests that sample only, without re-reading unchanged files
    write_sheet(
        sheet_ticker.samplesheet,
        "s1,a_count_matrix.csv.gz,Ctrl,1",
        "s2,b_count_matrix.csv.gz,Pre,2",
        "s3,c_count_matrix.csv.gz,Post,1",
    )
    edited = sheet_ticker.tick()
    assert partition_keys(edited) == ["s2"]
    new_version = edited.asset_events[0].tags["dagster/data_version"]
    assert new_version != versions["s2"]

    # a changed file re-ingests its sample
    time.sleep(0.01)
    age(write_sample(settings.data_dir, "a", seed=9))
    changed = sheet_ticker.tick()
    assert partition_keys(changed) == ["s1"]

    # a removed row is a removed source: never materialized, so its partition is dropped
    write_sheet(
        sheet_ticker.samplesheet,
        "s1,a_count_matrix.csv.gz,Ctrl,1",
        "s3,c_count_matrix.csv.gz,Post,1",
    )
    removed = sheet_ticker.tick()
    assert removed.run_requests == []
    assert "source of s2 is missing: partition dropped" in reason(removed)
    assert sorted(instance.get_dynamic_partitions("samples")) == ["s1", "s3"]


def test_a_bad_sheet_changes_nothing_and_is_logged_once(sheet_ticker, settings, instance, capfd):
    age(write_sample(settings.data_dir, "a"))
    write_sheet(sheet_ticker.samplesheet, "s1,a_count_matrix.csv.gz,Ctrl,1")
    assert partition_keys(sheet_ticker.tick()) == ["s1"]

    write_sheet(
        sheet_ticker.samplesheet,
        "s1,a_count_matrix.csv.gz,Ctrl,1",
        "s2,nowhere.h5,Pre,1",
        "s 3,a_count_matrix.csv.gz,Post,1",
    )
    logged(capfd)
    bad = sheet_ticker.tick()
    assert bad.run_requests == [] and not bad.dynamic_partitions_requests
    assert "invalid samplesheet (3 problems)" in reason(bad)
    log = logged(capfd)
    assert "study.csv, line 3, column path:" in log and "line 4, column sample:" in log
    assert instance.get_dynamic_partitions("samples") == ["s1"]
    again = sheet_ticker.tick()  # the same problems: not logged again, the sensor keeps ticking
    assert again.run_requests == [] and "study.csv" not in logged(capfd)

    # fixed: back to normal
    write_sheet(sheet_ticker.samplesheet, "s1,a_count_matrix.csv.gz,Ctrl,1")
    assert sheet_ticker.tick().run_requests == []
