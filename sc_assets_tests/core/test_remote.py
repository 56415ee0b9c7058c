"""The local mirror of a study in object storage (a real S3 API: moto's server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sc_assets.core.discovery import find_sample, scan_inbox
from sc_assets.core.remote import Mirror, is_url, local_study, location


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Mirrors go under TMPDIR (a worker's scratch disk): a fresh one per test."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    return scratch / "sc-assets-inputs"


def put(bucket, key: str, data: bytes) -> None:
    with bucket.fs.open(f"{bucket.name}/{key}", "wb") as f:
        f.write(data)


def test_urls_and_local_paths_are_told_apart():
    assert is_url("s3://lab/inbox") and not is_url("/data/inbox") and not is_url(None)
    assert str(location("s3://lab/inbox")) == "s3://lab/inbox"
    assert location("data") == Path("data").absolute()


def test_an_object_is_downloaded_once_per_etag_and_removed_when_deleted(bucket, cache):
    put(bucket, "inbox/a.h5ad", b"first")
    put(bucket, "inbox/sub/b.h5ad", b"bee")
    mirror = Mirror(bucket.url("inbox"))
    folder = mirror.sync()
    assert folder == cache / "s3" / bucket.name / "inbox"
    assert (folder / "a.h5ad").read_bytes() == b"first"
    assert (folder / "sub" / "b.h5ad").read_bytes() == b"bee"
    listed = mirror.list()
    assert listed["a.h5ad"].size == 5 and listed["a.h5ad"].etag
    # the copy's modification time is the object's LastModified
    assert (folder / "a.h5ad").stat().st_mtime_ns == listed["a.h5ad"].mtime_ns
    before = (folder / "a.h5ad").stat()

    mirror.sync()  # nothing changed: nothing is downloaded again (same inode)
    assert (folder / "a.h5ad").stat().st_ino == before.st_ino

    put(bucket, "inbox/a.h5ad", b"second")  # a new ETag: a new copy, a new inode
    mirror.sync()
    assert (folder / "a.h5ad").read_bytes() == b"second"
    assert (folder / "a.h5ad").stat().st_ino != before.st_ino

    bucket.fs.rm(f"{bucket.name}/inbox/sub/b.h5ad")
    mirror.sync()
    assert not (folder / "sub").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["a.h5ad"]  # no partial file in it


def test_a_reader_of_a_replaced_copy_keeps_the_version_it_opened(bucket, cache):
    put(bucket, "inbox/a.h5ad", b"first")
    mirror = Mirror(bucket.url("inbox"))
    with open(mirror.sync() / "a.h5ad", "rb") as reader:
        put(bucket, "inbox/a.h5ad", b"second version")
        mirror.sync()
        assert reader.read() == b"first"


def test_a_selective_sync_fetches_only_what_is_kept(bucket, cache):
    put(bucket, "inbox/one.h5ad", b"1")
    put(bucket, "inbox/two.h5ad", b"2")
    mirror = Mirror(bucket.url("inbox"))
    folder = mirror.sync(keep=lambda relative: relative.startswith("one"))
    assert [p.name for p in folder.iterdir()] == ["one.h5ad"]
    folder = mirror.sync(keep=lambda relative: relative.startswith("two"))
    assert sorted(p.name for p in folder.iterdir()) == ["one.h5ad", "two.h5ad"]


def test_a_study_in_a_bucket_is_scanned_like_a_local_folder(bucket, cache, demo_files):
    for path in demo_files.values():
        bucket.fs.put_file(os.fspath(path), f"{bucket.name}/inbox/{path.name}")
    put(bucket, "inbox/notes.txt", b"not a sample")
    scan = scan_inbox(bucket.url("inbox"))
    assert sorted(scan.samples) == sorted(demo_files)
    assert list(scan.ignored) == ["notes.txt"]
    key = sorted(demo_files)[1]
    sample = scan.samples[key]
    assert sample.path.read_bytes() == demo_files[key].read_bytes()


def test_one_sample_of_a_bucket_downloads_only_that_sample(bucket, cache, demo_files):
    for path in demo_files.values():
        bucket.fs.put_file(os.fspath(path), f"{bucket.name}/inbox/{path.name}")
    key = sorted(demo_files)[2]
    sample = find_sample(bucket.url("inbox"), None, key)
    assert sample is not None and sample.partition_key == key
    folder = cache / "s3" / bucket.name / "inbox"
    assert [p.name for p in folder.iterdir()] == [demo_files[key].name]


def test_a_samplesheet_in_a_bucket_brings_its_folder(bucket, cache, demo_files):
    first, second = sorted(demo_files)[:2]
    for key in (first, second):
        bucket.fs.put_file(os.fspath(demo_files[key]), f"{bucket.name}/study/files/{key}.csv.gz")
    sheet = f"sample,path,format,condition\ns1,files/{first}.csv.gz,csv,ctrl\n"
    sheet += f"s2,files/{second}.csv.gz,csv,case\n"
    put(bucket, "study/sheet.csv", sheet.encode())
    folder, local_sheet = local_study("unused", bucket.url("study/sheet.csv"))
    assert local_sheet == folder / "sheet.csv" and local_sheet.is_file()
    scan = scan_inbox("unused", bucket.url("study/sheet.csv"))
    assert sorted(scan.samples) == ["s1", "s2"]
    assert scan.samples["s2"].spec.describe()["condition"] == "case"
