"""A study whose inputs and outputs are in object storage (a real S3 API: moto's server),
configured only with the standard ``AWS_*`` variables and ``s3://`` URLs."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from dagster import AssetKey, AssetMaterialization, DagsterInstance
from upath import UPath

from sc_assets.core.samples import sample_label
from sc_assets.io_managers import DeferredH5ad, H5adIOManager
from sc_assets_tests.conftest import run_cli
from sc_assets_tests.test_sensors import Ticker, partition_keys, reason


def upload(bucket, files: list[Path], prefix: str) -> None:
    for path in files:
        bucket.fs.put_file(os.fspath(path), f"{bucket.name}/{prefix}/{path.name}")


def fetch_h5ad(bucket, key: str, tmp_path: Path) -> ad.AnnData:
    local = tmp_path / "fetched" / key
    local.parent.mkdir(parents=True, exist_ok=True)
    bucket.fs.get_file(f"{bucket.name}/{key}", os.fspath(local))
    return ad.read_h5ad(local)


def test_cli_ingest_from_a_bucket_into_a_bucket(bucket, demo_files, tmp_path, monkeypatch):
    keys = sorted(demo_files)[:3]
    upload(bucket, [demo_files[k] for k in keys], "inbox")
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the input mirror and staged files
    done = run_cli(
        "ingest", "--data-dir", bucket.url("inbox"), "--storage-dir", bucket.url("store"),
        cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[1:]] == [*keys, "merged_adata"]
    assert all(line.rstrip().endswith("ok") for line in done.stdout.splitlines()[1:])

    stored = sorted(bucket.fs.find(f"{bucket.name}/store"))
    assert stored == [
        f"{bucket.name}/store/merged_adata.h5ad",
        f"{bucket.name}/store/reference_genes.txt",
        *(f"{bucket.name}/store/sample_adata/{k}.h5ad" for k in keys),
    ]
    assert not (project / "storage").exists()  # nothing was written locally instead

    parts = {k: fetch_h5ad(bucket, f"store/sample_adata/{k}.h5ad", tmp_path) for k in keys}
    merged = fetch_h5ad(bucket, "store/merged_adata.h5ad", tmp_path)
    labelled = {sample_label(k): part for k, part in parts.items()}  # Ctrl1, Ctrl2...
    expected = ad.concat(labelled, join="inner", merge="same", label="sample")
    assert merged.shape == expected.shape == (sum(p.n_obs for p in parts.values()), 33538)
    names = [f"{label}-{name}" for label, part in labelled.items() for name in part.obs_names]
    assert list(merged.obs_names) == names
    assert (merged.X != expected.X).nnz == 0
    assert (merged.layers["counts"] != expected.layers["counts"]).nnz == 0
    assert list(merged.obs["sample"]) == list(expected.obs["sample"])
    for part in parts.values():  # every per-sample file: raw counts, obs, QC, var["mt"]
        assert np.array_equal(part.X.toarray(), part.layers["counts"].toarray())
        assert {"total_counts", "n_genes_by_counts", "pct_counts_mt"} <= set(part.obs)
        assert part.var["mt"].sum() == 13

    with DagsterInstance.from_config(str(project / ".dagster_home")) as instance:
        sample = instance.get_latest_materialization_event(AssetKey("sample_adata"))
        metadata = sample.asset_materialization.metadata
        assert metadata["source"].value.startswith(f"s3://{bucket.name}/inbox/GSM")  # not the copy
        assert metadata["host"].value == socket.gethostname()
        event = instance.get_latest_materialization_event(AssetKey("merged_adata"))
        assert event.asset_materialization.metadata["path"].value == bucket.url(
            "store/merged_adata.h5ad"
        )


def test_report_of_a_bucket_study(bucket, demo_files, tmp_path, monkeypatch):
    keys = sorted(demo_files)[:2]
    upload(bucket, [demo_files[k] for k in keys], "inbox")
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("SC_ASSETS_STORAGE_DIR", bucket.url("store"))
    ingest = run_cli("ingest", "--data-dir", bucket.url("inbox"), cwd=project)
    assert ingest.returncode == 0, ingest.stderr
    report = run_cli("report", cwd=project)
    assert report.returncode == 0, report.stderr
    text = (project / "reports" / "report.md").read_text()
    assert all(key in text for key in keys) and "merged_adata" in text


def test_the_sensor_follows_the_objects_etags(bucket, demo_files, instance, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    instance.report_runless_asset_event(AssetMaterialization("reference_genes"))
    ticker = Ticker(instance, bucket.url("inbox"))
    first, second = sorted(demo_files)[:2]
    upload(bucket, [demo_files[first], demo_files[second]], "inbox")

    # objects appear whole, but one look passes before they count (as for local files)
    assert ticker.tick().run_requests == []
    landed = ticker.tick()
    assert partition_keys(landed) == [first, second]
    assert sorted(instance.get_dynamic_partitions("samples")) == [first, second]
    assert ticker.tick().run_requests == []

    # the same bytes uploaded again: the same ETag, nothing is fetched or run
    upload(bucket, [demo_files[first]], "inbox")
    assert ticker.tick().run_requests == [] and ticker.tick().run_requests == []

    # other bytes under the same name: a new ETag, the sample runs again
    bucket.fs.put_file(
        os.fspath(demo_files[second]), f"{bucket.name}/inbox/{demo_files[first].name}"
    )
    assert ticker.tick().run_requests == []
    replaced = ticker.tick()
    assert partition_keys(replaced) == [first]

    bucket.fs.rm(f"{bucket.name}/inbox/{demo_files[second].name}")
    gone = ticker.tick()
    assert reason(gone) == (
        f"source of {second} is missing: partition dropped (no good data to keep)"
    )  # a deleted object is a deleted file: never run, so nothing good to keep
    assert instance.get_dynamic_partitions("samples") == [first]


def test_a_failed_write_leaves_the_stored_object_as_it_was(bucket):
    manager = H5adIOManager(UPath(bucket.url("store")))
    adata = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    manager.store_partition(AssetKey("sample_adata"), "s1", adata)
    stored = bucket.fs.cat(f"{bucket.name}/store/sample_adata/s1.h5ad")

    with pytest.raises(OSError, match="disk gone mid-write"):
        manager.store_partition(AssetKey("sample_adata"), "s1", _half_written())
    assert bucket.fs.cat(f"{bucket.name}/store/sample_adata/s1.h5ad") == stored
    assert bucket.fs.find(f"{bucket.name}/store") == [f"{bucket.name}/store/sample_adata/s1.h5ad"]


def _half_written() -> DeferredH5ad:
    def write(path, compression):
        path.write_bytes(b"HDF partial")
        raise OSError("disk gone mid-write")

    return DeferredH5ad(write=write)


def test_an_object_store_that_cannot_be_reached_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    done = run_cli("ingest", "--data-dir", "s3://lab/inbox", cwd=tmp_path, timeout=300)
    assert done.returncode == 2
    assert done.stderr.startswith("sc-assets: the object store refused or cannot be reached: ")
    assert "http://127.0.0.1:1" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
