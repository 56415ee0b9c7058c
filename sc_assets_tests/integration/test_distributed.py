"""Runs on Celery workers on two simulated hosts, with object storage and PostgreSQL
(``cluster_demo.py`` starts it all, with ``deploy/``'s files as a deployment uses them)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import anndata as ad
import pytest
from dagster import DagsterRunStatus, RunsFilter

from sc_assets.core.samples import sample_label
from sc_assets_tests.integration.cluster import skip_unless_cluster_possible
from sc_assets_tests.integration.cluster_demo import (
    BUCKET,
    Cluster,
    cluster,
    instance_of,
    merged_samples,
    sample_hosts,
    wait_until,
)

pytestmark = pytest.mark.integration

#: A lost worker's run is failed after 3 missed pings, one per 10 s monitor poll
#: (deploy/dagster.yaml), plus a ping timeout; this allows one more poll of slack.
LOST_WORKER_BOUND_SECONDS = 3 * 10 + 2 + 10


@pytest.fixture
def running(tmp_path: Path):
    skip_unless_cluster_possible()
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("no rabbitmqctl to give the cluster a RabbitMQ vhost of its own")
    with cluster(tmp_path / "cluster") as state:
        yield state


def test_two_hosts_ingest_into_object_storage_and_a_lost_worker_loses_nothing(
    running: Cluster, demo_files, tmp_path
):
    state = running
    keys = sorted(demo_files)[:4]
    state.upload([demo_files[k] for k in keys])
    with instance_of(state) as instance:
        wait_until(
            lambda: merged_samples(instance) == keys,
            timeout=300, what="the merge of the first four samples", state=state,
        )  # fmt: skip
        hosts = sample_hosts(instance)
        assert sorted(hosts) == keys
        assert set(hosts.values()) == {host.name for host in state.hosts.hosts}  # both ran some
        assert_merged_equals_concat(state, keys, tmp_path)
        logs = [o["Key"] for o in _objects(state, "compute-logs/")]
        assert any(key.endswith(".err") for key in logs), logs  # the workers' compute logs

        # A host is lost while it runs a sample: the run is failed within the bound, retried
        # on the other host, and the merge then takes every sample once.
        from sc_assets.core.demo import write_demo_series

        (big,) = write_demo_series(tmp_path / "big", scale=0.5, samples=1, seed=7)
        late = "GSM5320499_Ctrl9"
        big = big.rename(big.with_name(f"{late}_count_matrix.csv.gz"))
        state.upload([big])
        run, worker = wait_until(
            lambda: _started_with_worker(instance, late),
            timeout=180, what=f"{late}'s run to start on a worker", state=state, interval=0.2,
        )  # fmt: skip
        lost = state.host_named(worker)
        lost.kill()
        killed_at = time.monotonic()
        wait_until(
            lambda: instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE,
            timeout=120, what="the lost worker's run to be failed", state=state, interval=0.5,
        )  # fmt: skip
        assert time.monotonic() - killed_at <= LOST_WORKER_BOUND_SECONDS
        print(f"lost worker's run failed {time.monotonic() - killed_at:.1f} s after the kill")
        messages = [record.message or "" for record in instance.all_logs(run.run_id)]
        assert any("stopped answering" in message for message in messages), messages[-5:]
        retry = wait_until(
            lambda: _successful_retry(instance, run.run_id),
            timeout=240, what="the retry of the lost run", state=state,
        )  # fmt: skip
        assert retry.run_id != run.run_id
        survivor = next(host.name for host in state.hosts.hosts if host is not lost)
        assert sample_hosts(instance)[late] == survivor
        everything = sorted([*keys, late])
        wait_until(
            lambda: merged_samples(instance) == everything,
            timeout=300, what="the merge with the retried sample", state=state,
        )  # fmt: skip
        assert_merged_equals_concat(state, everything, tmp_path)
        stored = sorted(o["Key"] for o in _objects(state, "storage/"))
        assert stored == [  # nothing partial or temporary is visible
            "storage/merged_adata.h5ad",
            "storage/reference_genes.txt",
            *(f"storage/sample_adata/{key}.h5ad" for key in everything),
        ]


def assert_merged_equals_concat(state: Cluster, keys: list[str], tmp_path: Path) -> None:
    """The merged object equals ``anndata.concat`` of the per-sample objects, exactly."""
    client = state.s3.client()
    folder = tmp_path / "fetched"
    folder.mkdir(exist_ok=True)

    def fetch(key: str) -> ad.AnnData:
        local = folder / key.replace("/", "_")
        client.download_file(BUCKET, key, str(local))
        return ad.read_h5ad(local)

    parts = {sample_label(k): fetch(f"storage/sample_adata/{k}.h5ad") for k in keys}
    merged = fetch("storage/merged_adata.h5ad")
    expected = ad.concat(parts, join="inner", merge="same", label="sample")
    assert merged.shape == expected.shape
    names = [f"{label}-{name}" for label, part in parts.items() for name in part.obs_names]
    assert list(merged.obs_names) == names  # every sample once, in order: none duplicated
    assert (merged.X != expected.X).nnz == 0
    assert (merged.layers["counts"] != expected.layers["counts"]).nnz == 0
    assert list(merged.obs["sample"]) == list(expected.obs["sample"])


def _objects(state: Cluster, prefix: str) -> list[dict]:
    listed = state.s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return listed.get("Contents", [])


def _started_with_worker(instance, sample: str):
    """The STARTED run of ``sample`` and the Celery worker running it, once both are known."""
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        if run.tags.get("dagster/partition") == sample:
            worker = instance.run_launcher.worker_of(run)
            if worker:
                return run, worker
    return None


def _successful_retry(instance, run_id: str):
    retries = instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": run_id}))
    return next((r for r in retries if r.status == DagsterRunStatus.SUCCESS), None)
