import os
import subprocess
import sys

import pytest

from sc_assets.core.atomic import atomic_path, remove_stale_temp_files, temp_path_for


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
