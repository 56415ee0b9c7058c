"""The real daemon: files dropped into the inbox are ingested and merged without a click."""

import shutil

import pytest
from dagster import AssetKey, DagsterInstance

from sc_assets_tests.integration.conftest import DagsterDev

pytestmark = pytest.mark.integration

SAMPLE, MERGED = AssetKey("sample_adata"), AssetKey("merged_adata")
KEYS = ["GSM5320459_Ctrl1", "GSM5320460_Ctrl2"]


def test_dropped_files_are_ingested_then_merged(dagster_dev: DagsterDev, demo_files):
    with DagsterInstance.from_config(str(dagster_dev.home)) as instance:
        for key in KEYS:
            shutil.copy(demo_files[key], dagster_dev.data_dir / demo_files[key].name)
        (dagster_dev.data_dir / "notes.txt").write_text("junk")  # reported, never a partition

        dagster_dev.wait_until(
            lambda: set(KEYS) <= instance.get_materialized_partitions(SAMPLE),
            timeout=240,
            what="both sample_adata partitions",
        )
        merged = dagster_dev.wait_until(
            lambda: instance.get_latest_materialization_event(MERGED),
            timeout=240,
            what="merged_adata",
        )
        metadata = merged.asset_materialization.metadata
        assert metadata["n_samples"].value == 2
        assert sorted(instance.get_dynamic_partitions("samples")) == KEYS
        assert (dagster_dev.storage_dir / "merged_adata.h5ad").exists()

        # copying the same file again does nothing: no new run is launched
        runs_before = len(instance.get_run_records())
        shutil.copy(demo_files[KEYS[0]], dagster_dev.data_dir / demo_files[KEYS[0]].name)
        dagster_dev.wait_until(
            lambda: _ticks_since(instance, merged.timestamp) >= 3, timeout=60, what="3 ticks"
        )
        assert len(instance.get_run_records()) == runs_before


def _ticks_since(instance: DagsterInstance, timestamp: float) -> int:
    sensor = next(
        s for s in instance.all_instigator_state() if s.instigator_name == "new_samples_sensor"
    )
    ticks = instance.get_ticks(sensor.instigator_origin_id, sensor.selector_id, limit=20)
    return sum(1 for tick in ticks if tick.timestamp > timestamp)
