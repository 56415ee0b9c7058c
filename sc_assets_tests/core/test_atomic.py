import errno
import os
import subprocess
import sys

import pytest

from sc_assets.core.atomic import (
    StorageFullError,
    atomic_path,
    remove_stale_temp_files,
    temp_path_for,
)


def test_replaces_the_file_only_when_the_write_completes(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp.parent and tmp.name.startswith(".a.txt.")
        tmp.write_text("new")
        assert target.read_text() == "old"  # readers still see the old file
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_removes_temp_files_of_dead_writers_but_not_of_live_ones(tmp_path):
    target = tmp_path / "a.h5ad"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".a.h5ad.{dead.stdout.strip()}.deadbeef.tmp"
    stale.write_text("leftover of a killed run")
    live = temp_path_for(target)  # this process: alive
    live.write_text("being written")
    other = tmp_path / f".b.h5ad.{dead.stdout.strip()}.deadbeef.tmp"  # another target
    other.write_text("not ours")

    assert remove_stale_temp_files(target) == [stale]
    assert live.exists() and other.exists() and not stale.exists()


def test_temp_names_are_unique_and_hidden(tmp_path):
    names = {temp_path_for(tmp_path / "x.h5ad").name for _ in range(100)}
    assert len(names) == 100
    assert all(n.startswith(".x.h5ad.") and n.endswith(".tmp") for n in names)
    assert all(f".{os.getpid()}." in n for n in names)


def test_a_file_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=30_000_000))
    with (
        pytest.raises(StorageFullError) as refused,
        atomic_path(tmp_path / "a.h5ad", size_hint=45_000_000),
    ):
        pytest.fail("nothing may be written")
    assert str(refused.value) == (
        f"no space left on device in {tmp_path}: about 45 MB needed, 30 MB free"
    )
    assert refused.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_disk_that_fills_while_writing_gives_one_line_and_no_temp_file(tmp_path):
    target = tmp_path / "a.h5ad"
    target.write_text("old")
    full = r"^no space left on device in .*: [\d,]+ MB free$"
    with pytest.raises(StorageFullError, match=full), atomic_path(target) as tmp:
        tmp.write_text("half")
        # what h5py raises when a write hits ENOSPC: a message, no errno
        raise OSError("Can't write data (file write failed: errno = 28, error message = "
                      "'No space left on device')")  # fmt: skip
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5ad"]
