"""Runs of several samples (partition ranges): each sample is materialized, checked and failed
on its own, as in a run of one."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from dagster import DagsterEventType
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from sc_assets.batches import plan_batches
from sc_assets.checks import SAMPLE_ADATA, SAMPLE_CHECKS
from sc_assets.core.inbox import scan_inbox
from sc_assets.ingest import observe_sources
from sc_assets.sample_status import sample_statuses
from sc_assets.sources import source_observation
from sc_assets_tests.conftest import copy_samples, pandas_reference, run, write_sample

GOOD = ["GSM5320459_Ctrl1", "GSM5320460_Ctrl2", "GSM5320461_Ctrl3"]
FEW_CELLS = "GSM5320462_Ctrl4"
BROKEN = ["GSM5320463_Pre1", "GSM5320464_Pre2"]


def run_range(p, keys: list[str]):
    return p.defs.resolve_job_def("ingest_sample").execute_in_process(
        instance=p.instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def batch(module_platform, demo_files):
    """One run of six samples: three good, one with too few cells, two unreadable."""
    p = module_platform
    data_dir = p.settings.data_dir
    copy_samples(demo_files, data_dir, GOOD)
    write_sample(data_dir, FEW_CELLS, n_cells=20, seed=4, genes=_genes(demo_files))
    for key in BROKEN:
        (data_dir / f"{key}_count_matrix.csv.gz").write_bytes(b"\x1f\x8b not really gzip")
    keys = [*GOOD, FEW_CELLS, *BROKEN]
    p.instance.add_dynamic_partitions("samples", keys)
    observe_sources(p.instance, list(scan_inbox(data_dir).samples.values()))
    assert run(p, "pin_reference_genes").success
    return p, keys, run_range(p, keys)


def _genes(demo_files) -> list[str]:
    return pandas_reference(demo_files[GOOD[0]])[2]


def test_every_good_sample_of_the_batch_is_stored_with_exactly_its_counts(batch, demo_files):
    p, keys, result = batch
    materialized = {e.materialization.partition for e in result.get_asset_materialization_events()}
    assert materialized == {*GOOD, FEW_CELLS}
    for key in GOOD:
        stored = ad.read_h5ad(p.settings.storage_dir + f"/sample_adata/{key}.h5ad")
        X, barcodes, genes = pandas_reference(demo_files[key])
        assert (stored.X != X).nnz == 0 and list(stored.obs_names) == barcodes


def test_each_sample_has_its_six_checks_aimed_at_its_own_materialization(batch):
    p, keys, result = batch
    latest = p.instance.get_latest_storage_id_by_partition(
        SAMPLE_ADATA, DagsterEventType.ASSET_MATERIALIZATION, partitions=set(keys)
    )
    by_partition: dict[str, dict] = {}
    for evaluation in result.get_asset_check_evaluations():
        by_partition.setdefault(evaluation.partition, {})[evaluation.check_name] = evaluation
    assert set(by_partition) == {*GOOD, FEW_CELLS}
    for key, checks in by_partition.items():
        assert list(checks) == list(SAMPLE_CHECKS)
        for evaluation in checks.values():
            assert evaluation.target_materialization_data.storage_id == latest[key]
    assert all(e.passed for key in GOOD for e in by_partition[key].values())
    cell_count = by_partition[FEW_CELLS]["cell_count"]
    assert not cell_count.passed and cell_count.description.startswith("Only 20 cells")


def test_a_sample_that_fails_fails_alone(batch):
    p, keys, result = batch
    assert not result.success  # the run says some of its samples failed...
    statuses = sample_statuses(p.instance, keys)
    for key in GOOD:  # ...but the good ones are good
        assert not statuses[key].blocked, statuses[key].reason
    assert statuses[FEW_CELLS].failed_checks.keys() == {"cell_count"}
    assert statuses[FEW_CELLS].run_error is None
    for key in BROKEN:  # each unreadable file is named on its own partition
        status = statuses[key]
        assert not status.materialized
        assert f"{key}_count_matrix.csv.gz" in status.run_error
        other = next(k for k in BROKEN if k != key)
        assert other not in status.run_error
    partitions = p.instance.get_status_by_partition(
        SAMPLE_ADATA, keys, p.defs.resolve_assets_def(SAMPLE_ADATA).partitions_def
    )
    assert {key: status.value for key, status in partitions.items()} == {
        **dict.fromkeys([*GOOD, FEW_CELLS], "MATERIALIZED"),
        **dict.fromkeys(BROKEN, "FAILED"),
    }


def test_a_sample_becomes_stale_when_its_source_changes(batch):
    """The lineage tags of a batch's materializations are those Dagster writes for an Output."""
    p, keys, _ = batch
    graph = p.defs.resolve_asset_graph()

    def status(key: str) -> StaleStatus:
        resolver = CachingStaleStatusResolver(
            p.instance, graph, loading_context=LoadingContextForTest(p.instance)
        )
        return resolver.get_status(SAMPLE_ADATA, key)

    assert status(GOOD[0]) == StaleStatus.FRESH
    sample = scan_inbox(p.settings.data_dir).samples[GOOD[0]]
    p.instance.report_runless_asset_event(source_observation(sample, "0" * 64, {}))
    assert status(GOOD[0]) == StaleStatus.STALE
    assert status(GOOD[1]) == StaleStatus.FRESH


def test_batches_hold_neighbours_in_partition_order_largest_first():
    order = [f"s{i}" for i in range(10)]
    sizes = {key: 10 for key in order if key not in {"s4", "s5"}}  # s4, s5 not to run
    sizes["s9"] = 100
    batches = plan_batches(order, sizes, workers=1)
    # 8 samples, 1 worker x 4 batches: 2 per batch; no batch spans the gap at s4-s5.
    assert batches == [("s8", "s9"), ("s0", "s1"), ("s2", "s3"), ("s6", "s7")]
    assert plan_batches(order, {"s3": 1}, workers=2) == [("s3",)]
    many = {f"k{i}": 1 for i in range(1000)}
    assert {len(b) for b in plan_batches(list(many), many, workers=2)} == {50}
    assert np.sum([len(b) for b in plan_batches(list(many), many, workers=2)]) == 1000
