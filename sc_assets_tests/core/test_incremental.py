"""update_merged gives what merge_h5ad gives, writing only what changed; its view fails loudly
when a part it relies on is gone, and old readers keep their version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from sc_assets.core import incremental
from sc_assets.core.h5ad import write_h5ad
from sc_assets.core.incremental import (
    MergedFileError,
    collect_garbage,
    export_merged,
    parts_folder,
    read_merged,
    update_merged,
    verify_merged,
)
from sc_assets.core.merge import merge_h5ad
from sc_assets_tests.core.test_merge import (
    GENES,
    PANEL,
    assert_same_adata,
    assert_same_file,
    make_sample,
)

CANARY_WORKS = incremental.TRUNCATION_FAILS_ON_READ


def sample_file(folder: Path, label: str, *, seed: int, n_cells: int = 30, **kwargs) -> Path:
    """A per-sample file as the platform writes it: counts layer as a hard link to X."""
    adata = make_sample(label, n_cells=n_cells, seed=seed, panel=PANEL, **kwargs)
    path = folder / "samples" / f"{label}.h5ad"
    path.parent.mkdir(exist_ok=True)
    write_h5ad(adata, path)
    return path


@pytest.fixture
def study(tmp_path: Path) -> dict[str, Path]:
    """Four samples (three conditions, so categories change as samples come and go)."""
    specs = [("Ctrl1", 1, 30), ("Pre1", 2, 25), ("Post1", 3, 33), ("Ctrl2", 4, 20)]
    return {label: sample_file(tmp_path, label, seed=seed, n_cells=n) for label, seed, n in specs}


def sources_of(study: dict[str, Path], *labels: str) -> list[tuple[str, Path]]:
    return [(label, study[label]) for label in labels]


def check_equals_full_merge(sources, view: Path, result) -> None:
    """The view reads as merge_h5ad's file does, and the numbers are merge_h5ad's."""
    full = view.with_name("full.h5ad")
    summary = merge_h5ad(sources, full)
    assert result.summary == summary
    assert_same_adata(ad.read_h5ad(view), ad.read_h5ad(full))
    full.unlink()


def part_names(view: Path) -> set[str]:
    return {p.name for p in parts_folder(view).glob("*.h5")}


def part_of(view: Path, label: str) -> Path:
    with h5py.File(view) as f:
        manifest = incremental._Manifest.from_json(f.attrs[incremental.MANIFEST_ATTR])
    (entry,) = [e for e in manifest.entries if e.label == label]
    return parts_folder(view) / entry.part


# ---------------------------------------------------------------------------------------------
# Equal to merge_h5ad, incrementally
# ---------------------------------------------------------------------------------------------


def test_add_replace_remove_equal_a_full_merge(tmp_path: Path, study) -> None:
    view = tmp_path / "merged_adata.h5ad"
    first = update_merged(sources_of(study, "Ctrl1", "Pre1"), view, block_nnz=64)
    assert first.merge_mode == "full" and "first incremental merge" in first.full_reason
    assert first.added == ("Ctrl1", "Pre1")
    check_equals_full_merge(sources_of(study, "Ctrl1", "Pre1"), view, first)
    before = part_names(view)

    # Add one (a new condition: categories of obs columns change, kept rows are renumbered).
    added = update_merged(sources_of(study, "Ctrl1", "Pre1", "Post1"), view, block_nnz=64)
    assert (added.merge_mode, added.full_reason) == ("incremental", None)
    assert (added.added, added.replaced, added.removed) == (("Post1",), (), ())
    assert before < part_names(view)  # the other samples' parts are kept, not rewritten
    assert added.bytes_written < first.bytes_written
    check_equals_full_merge(sources_of(study, "Ctrl1", "Pre1", "Post1"), view, added)

    # Replace one: its file rewritten in place, as write_h5ad does (same inode, truncated).
    write_h5ad(make_sample("Pre1", n_cells=12, seed=9, panel=PANEL), study["Pre1"])
    replaced = update_merged(sources_of(study, "Ctrl1", "Pre1", "Post1"), view)
    assert (replaced.merge_mode, replaced.replaced, replaced.added) == (
        "incremental",
        ("Pre1",),
        (),
    )
    check_equals_full_merge(sources_of(study, "Ctrl1", "Pre1", "Post1"), view, replaced)

    # Remove one: only the view is written.
    removed = update_merged(sources_of(study, "Ctrl1", "Post1"), view)
    assert (removed.merge_mode, removed.removed) == ("incremental", ("Pre1",))
    assert removed.bytes_written == view.stat().st_size
    check_equals_full_merge(sources_of(study, "Ctrl1", "Post1"), view, removed)

    # Another order and one back: the view follows the order of the sources.
    order = sources_of(study, "Post1", "Ctrl2", "Ctrl1")
    reordered = update_merged(order, view)
    assert reordered.added == ("Ctrl2",)
    check_equals_full_merge(order, view, reordered)


def test_nothing_changed_writes_nothing(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    sources = sources_of(study, "Ctrl1", "Pre1")
    first = update_merged(sources, view)
    again = update_merged(sources, view)
    assert again.bytes_written == 0 and again.version == first.version
    assert again.summary == first.summary
    assert (again.added, again.replaced, again.removed) == ((), (), ())


def test_caller_versions_identify_sources(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    sources = sources_of(study, "Ctrl1", "Pre1")
    update_merged(sources, view, versions={"Ctrl1": "a", "Pre1": "b"})
    os.utime(study["Ctrl1"])  # touched: a new file identity, but the same version
    assert update_merged(sources, view, versions={"Ctrl1": "a", "Pre1": "b"}).bytes_written == 0
    result = update_merged(sources, view, versions={"Ctrl1": "a", "Pre1": "c"})
    assert result.replaced == ("Pre1",)


def test_counts_layer_stored_once_or_twice(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    update_merged(sources_of(study, "Ctrl1", "Pre1"), view)
    with h5py.File(view) as f:
        assert f["layers/counts"] == f["X"]  # a link, as merge_h5ad writes it
    # A sample whose X is not its counts: the merged counts layer is a matrix of its own.
    adata = make_sample("Post9", n_cells=15, seed=5, panel=PANEL)
    adata.X = adata.X.multiply(0.5).tocsr()
    other = tmp_path / "Post9.h5ad"
    adata.write_h5ad(other)
    sources = [*sources_of(study, "Ctrl1", "Pre1"), ("Post9", other)]
    result = update_merged(sources, view)
    assert result.merge_mode == "incremental"
    with h5py.File(view) as f:
        assert f["layers/counts"] != f["X"]
    check_equals_full_merge(sources, view, result)
    assert result.summary.x_checksum != result.summary.counts_checksum


def test_obs_dtype_change_rewrites_obs_from_the_parts(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    update_merged(sources_of(study, "Ctrl1", "Pre1"), view)
    adata = make_sample("Post9", n_cells=15, seed=5, panel=PANEL)
    adata.obs["donor"] = np.nan  # int64 elsewhere: the merged column becomes float
    path = tmp_path / "Post9.h5ad"
    write_h5ad(adata, path)
    sources = [*sources_of(study, "Ctrl1", "Pre1"), ("Post9", path)]
    result = update_merged(sources, view)
    assert result.merge_mode == "incremental"
    check_equals_full_merge(sources, view, result)


def test_empty_sample(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    empty = tmp_path / "Empty1.h5ad"
    write_h5ad(make_sample("Empty1", n_cells=0, seed=6, panel=PANEL), empty)
    sources = [*sources_of(study, "Ctrl1"), ("Empty1", empty), *sources_of(study, "Pre1")]
    update_merged(sources_of(study, "Ctrl1", "Pre1"), view)
    check_equals_full_merge(sources, view, update_merged(sources, view))


def test_export_is_the_full_merge(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    sources = sources_of(study, "Ctrl1", "Pre1", "Post1")
    update_merged(sources[:2], view)
    update_merged(sources, view)
    exported = export_merged(view, tmp_path / "export.h5ad")
    full = tmp_path / "full.h5ad"
    assert exported == merge_h5ad(sources, full)
    assert_same_file(tmp_path / "export.h5ad", full)
    with h5py.File(tmp_path / "export.h5ad") as f:
        assert incremental.MANIFEST_ATTR not in f.attrs and f["X/data"].external is None


def test_result_metadata(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    update_merged(sources_of(study, "Ctrl1", "Pre1"), view)
    result = update_merged(sources_of(study, "Ctrl1", "Post1"), view)
    metadata = result.metadata()
    assert metadata["merge_mode"] == "incremental"
    assert metadata["samples_added"] == ["Post1"] and metadata["samples_removed"] == ["Pre1"]
    assert metadata["bytes_written"] == result.bytes_written > 0
    assert metadata["merged_version"] == result.version


# ---------------------------------------------------------------------------------------------
# Full merges: when and why
# ---------------------------------------------------------------------------------------------


def test_gene_set_change_falls_back_to_full(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    update_merged(sources_of(study, "Ctrl1", "Pre1"), view)
    subset = tmp_path / "Few1.h5ad"
    write_h5ad(make_sample("Few1", GENES[::2] + ["MT-ND1"], n_cells=20, seed=7), subset)
    sources = [*sources_of(study, "Ctrl1", "Pre1"), ("Few1", subset)]
    result = update_merged(sources, view)
    assert result.merge_mode == "full"
    assert "genes common to all samples change (32 -> 17)" in result.full_reason
    assert result.added == ("Few1",) and result.replaced == ("Ctrl1", "Pre1")
    check_equals_full_merge(sources, view, result)
    # Back to the common genes: full again.
    back = update_merged(sources_of(study, "Ctrl1", "Pre1"), view)
    assert back.merge_mode == "full"
    check_equals_full_merge(sources_of(study, "Ctrl1", "Pre1"), view, back)


def test_superset_of_the_genes_stays_incremental(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    update_merged(sources_of(study, "Ctrl1", "Pre1"), view)
    rng = np.random.default_rng(3)
    adata = make_sample("Big1", list(rng.permutation(GENES + ["EXTRA"])), n_cells=20, seed=8)
    adata.X.data[:3] = adata.layers["counts"].data[:3] = 0  # dropped by the join, as concat does
    big = tmp_path / "Big1.h5ad"
    adata.write_h5ad(big)
    sources = [*sources_of(study, "Ctrl1", "Pre1"), ("Big1", big)]
    result = update_merged(sources, view)
    assert result.merge_mode == "incremental"
    check_equals_full_merge(sources, view, result)
    # Its part holds the joined matrix; removing another sample keeps it.
    result = update_merged([*sources_of(study, "Ctrl1"), ("Big1", big)], view)
    assert result.merge_mode == "incremental"
    check_equals_full_merge([*sources_of(study, "Ctrl1"), ("Big1", big)], view, result)


def test_full_when_asked_or_when_the_file_is_a_plain_merge(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    sources = sources_of(study, "Ctrl1", "Pre1")
    merge_h5ad(sources, view)  # what the platform wrote before
    result = update_merged(sources, view)
    assert result.merge_mode == "full" and result.added == ("Ctrl1", "Pre1")
    result = update_merged(sources, view, full=True)
    assert (result.merge_mode, result.full_reason) == ("full", "requested")
    assert result.replaced == ("Ctrl1", "Pre1")
    check_equals_full_merge(sources, view, result)


def test_bad_sources_are_refused(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    with pytest.raises(ValueError, match="duplicate source label 'Ctrl1'"):
        update_merged([("Ctrl1", study["Ctrl1"]), ("Ctrl1", study["Pre1"])], view)
    with pytest.raises(FileNotFoundError):
        update_merged([("Ctrl1", tmp_path / "nope.h5ad")], view)
    with pytest.raises(ValueError, match="no sources"):
        update_merged([], view)
    with pytest.raises(ValueError, match="compression"):
        update_merged(sources_of(study, "Ctrl1"), view, compression="zstd")


# ---------------------------------------------------------------------------------------------
# Readers see one whole version; clean-up waits for them
# ---------------------------------------------------------------------------------------------


def test_reader_of_the_old_version_keeps_reading_it(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    old_sources = sources_of(study, "Ctrl1", "Pre1")
    update_merged(old_sources, view)
    want_old = ad.read_h5ad(view)
    reader = ad.read_h5ad(view, backed="r")
    try:
        new_sources = sources_of(study, "Pre1", "Post1")
        update_merged(new_sources, view)  # removes Ctrl1, adds Post1
        assert collect_garbage(view, grace_seconds=0).kept_in_use  # the old view is open
        assert reader.X[3:7].toarray().tolist() == want_old.X[3:7].toarray().tolist()
        # (anndata's to_memory closes the backed file: a later .X would open the new version)
        assert_same_adata(reader.to_memory(), want_old)
        check_equals_full_merge(new_sources, view, update_merged(new_sources, view))
    finally:
        reader.file.close()
    report = collect_garbage(view, grace_seconds=0)
    assert len(report.removed) == 1 and report.removed[0].startswith("Ctrl1.")
    assert verify_merged(view, deep=True).ok


def test_collect_garbage_keeps_recent_versions_and_waits_for_merges(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    update_merged(sources_of(study, "Ctrl1", "Pre1"), view, now=1000.0)
    update_merged(sources_of(study, "Pre1"), view, now=2000.0)
    with incremental._locked(parts_folder(view), blocking=True):  # a merge running
        assert collect_garbage(view, grace_seconds=0).skipped == "a merge of this file is running"
    kept = collect_garbage(view, grace_seconds=600, now=2100.0)
    assert kept.removed == () and len(kept.kept_in_grace) == 1
    gone = collect_garbage(view, grace_seconds=600, now=2700.0)
    assert len(gone.removed) == 1 and gone.removed[0].startswith("Ctrl1.")
    assert ad.read_h5ad(view).n_obs == 25
    # Nothing is removed for a view that is gone (deleted by hand: restored later?).
    moved = view.rename(tmp_path / "elsewhere.h5ad")
    assert "not an incremental view" in collect_garbage(view, grace_seconds=0).skipped
    moved.rename(view)
    # A part left by a merge that failed (named by no view) goes after the grace period.
    orphan = parts_folder(view) / "Lost.0123456789ab.h5"
    orphan.write_bytes(b"")
    assert collect_garbage(view, grace_seconds=3600).removed == ()
    assert collect_garbage(view, grace_seconds=3600, now=orphan.stat().st_mtime + 3601).removed == (
        orphan.name,
    )


# ---------------------------------------------------------------------------------------------
# Never silent garbage
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def merged(tmp_path: Path, study) -> tuple[Path, list[tuple[str, Path]]]:
    view = tmp_path / "storage" / "merged_adata.h5ad"
    view.parent.mkdir()
    sources = sources_of(study, "Ctrl1", "Pre1", "Post1")
    update_merged(sources, view)
    return view, sources


def assert_read_fails(view: Path, message: str) -> None:
    with pytest.raises(OSError, match=message):
        ad.read_h5ad(view)
    with pytest.raises(OSError, match=message):  # it reads layers["counts"] when opening
        ad.read_h5ad(view, backed="r")
    with pytest.raises(MergedFileError, match="update_merged.*full=True"):
        read_merged(view)


@pytest.mark.parametrize("what", ["one part", "the parts folder"])
def test_missing_part_fails_loudly_and_is_repaired(tmp_path: Path, merged, what: str) -> None:
    view, sources = merged
    if what == "one part":
        part_of(view, "Pre1").unlink()
    else:
        shutil.rmtree(parts_folder(view))
    assert_read_fails(view, "unable to open external raw data file")
    report = verify_merged(view)
    assert not report.ok and "part of sample" in report.problems[0]
    assert "is missing" in report.problems[0]
    with pytest.raises(MergedFileError, match="rebuild"):
        export_merged(view, tmp_path / "copy.h5ad")
    result = update_merged(sources, view)  # the sources are unchanged: their parts come back
    repaired = ("Pre1",) if what == "one part" else ("Ctrl1", "Pre1", "Post1")
    assert result.repaired == result.replaced == repaired
    assert result.merge_mode == "incremental"
    assert verify_merged(view, deep=True).ok
    check_equals_full_merge(sources, view, result)


@pytest.mark.skipif(not CANARY_WORKS, reason="this HDF5 reads a truncated VDS source silently")
@pytest.mark.parametrize("cut", ["last_byte", "into_the_matrix"])
def test_truncated_part_fails_loudly(merged, cut: str) -> None:
    view, _ = merged
    part = part_of(view, "Post1")
    with h5py.File(part) as f:
        data_at = f["X/data"].id.get_offset()
    size = part.stat().st_size
    os.truncate(part, size - 1 if cut == "last_byte" else data_at + 8)
    assert_read_fails(view, "truncated file")
    assert "bytes" in verify_merged(view).problems[0]


def test_part_replaced_by_another_file_fails_loudly(merged) -> None:
    view, _ = merged
    part = part_of(view, "Ctrl1")
    part.write_bytes(b"\0" * part.stat().st_size)  # same size, not HDF5
    if CANARY_WORKS:
        assert_read_fails(view, "file signature not found")
    assert "does not open" in " ".join(verify_merged(view).problems)


def test_part_changed_in_place_is_found_by_verify(merged) -> None:
    """The one tampering a plain read cannot see: the part's bytes changed, its size kept."""
    view, sources = merged
    part = part_of(view, "Ctrl1")
    with h5py.File(part) as f:
        data_at = f["X/data"].id.get_offset()
    with open(part, "r+b") as f:
        f.seek(data_at)
        f.write(np.float32(12345).tobytes())
    assert ad.read_h5ad(view).X.data[0] == 12345  # documented: plain reads return it
    assert "modified after it was written" in verify_merged(view).problems[0]
    (problem,) = verify_merged(view, deep=True).problems
    assert "part of sample 'Ctrl1'" in problem and "the bytes of X/data changed" in problem
    # The next update sees the part is not as written and copies the sample again.
    assert update_merged(sources, view).repaired == ("Ctrl1",)
    assert verify_merged(view, deep=True).ok


def test_sources_changed_or_deleted_do_not_change_the_view(tmp_path: Path, merged) -> None:
    """The parts are the merge's own copies: the per-sample files may change or go."""
    view, sources = merged
    want = ad.read_h5ad(view)
    write_h5ad(make_sample("Pre1", n_cells=5, seed=11), sources[1][1])  # rewritten in place
    sources[2][1].unlink()
    assert_same_adata(ad.read_h5ad(view), want)
    assert verify_merged(view, deep=True).ok


def test_reader_in_another_working_directory(tmp_path: Path, merged, monkeypatch) -> None:
    view, sources = merged
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    merge_h5ad(sources, "full.h5ad")
    assert_same_adata(ad.read_h5ad(os.path.relpath(view, elsewhere)), ad.read_h5ad("full.h5ad"))


def test_moved_storage_fails_loudly_until_relinked(tmp_path: Path, merged) -> None:
    view, sources = merged
    moved = tmp_path / "moved"
    shutil.move(view.parent, moved)
    new_view = moved / view.name
    assert_read_fails(new_view, "unable to open external raw data file")
    assert "update_merged" in verify_merged(new_view).problems[0]
    result = update_merged(sources, new_view)  # no part rewritten: the view points anew
    assert result.merge_mode == "incremental" and result.added == result.replaced == ()
    assert verify_merged(new_view, deep=True).ok
    check_equals_full_merge(sources, new_view, result)


def test_relative_source_paths(tmp_path: Path, study, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    sources = [(label, Path(os.path.relpath(study[label]))) for label in ("Ctrl1", "Pre1")]
    result = update_merged(sources, "merged.h5ad")
    assert result.summary.samples[0].path == "samples/Ctrl1.h5ad"
    check_equals_full_merge(sources, tmp_path / "merged.h5ad", result)


def test_few_file_descriptors_never_give_wrong_numbers(tmp_path: Path) -> None:
    """HDF5 keeps a virtual dataset's sources open and reads fill values for those it cannot
    open (out of descriptors, too): the canary's fill value is its true value, and the
    matrices' bytes come from external storage, which opens one file at a time or fails."""
    sources = []
    for i in range(40):
        path = tmp_path / f"S{i}.h5ad"
        write_h5ad(make_sample(f"S{i}", n_cells=4, seed=i), path)
        sources.append((f"S{i}", path))
    update_merged(sources, tmp_path / "view.h5ad")
    merge_h5ad(sources, tmp_path / "full.h5ad")
    code = (
        "import resource, sys, anndata as ad\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (30, 30))\n"
        "full, view = ad.read_h5ad(sys.argv[1]), ad.read_h5ad(sys.argv[2])\n"
        "assert (full.X != view.X).nnz == 0 and (full.X.data == view.X.data).all()\n"
    )
    args = [sys.executable, "-c", code, str(tmp_path / "full.h5ad"), str(tmp_path / "view.h5ad")]
    subprocess.run(args, check=True, capture_output=True)


def test_collect_garbage_sees_readers_in_other_processes(tmp_path: Path, study) -> None:
    view = tmp_path / "merged.h5ad"
    update_merged(sources_of(study, "Ctrl1", "Pre1"), view)
    code = "import sys, h5py\nf = h5py.File(sys.argv[1])\nprint('open', flush=True)\n"
    code += "sys.stdin.read()\n"
    reader = subprocess.Popen(
        [sys.executable, "-c", code, str(view)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline() == "open\n"
        update_merged(sources_of(study, "Pre1"), view)
        if Path("/proc/self/fd").is_dir():
            assert len(collect_garbage(view, grace_seconds=0).kept_in_use) == 1
    finally:
        reader.communicate("")
    assert len(collect_garbage(view, grace_seconds=0).removed) == 1


def test_verify_of_a_plain_merge(tmp_path: Path, study) -> None:
    full = tmp_path / "full.h5ad"
    merge_h5ad(sources_of(study, "Ctrl1"), full)
    report = verify_merged(full)
    assert report.ok and report.kind == "self-contained"
    assert not verify_merged(tmp_path / "none.h5ad").ok


def test_view_is_plain_anndata(merged) -> None:
    """What a reader with only anndata sees: the view's layout tricks stay out of the data."""
    view, _ = merged
    adata = ad.read_h5ad(view)
    assert dict(adata.uns) == {} and list(adata.layers) == ["counts"]
    with h5py.File(view) as f:
        assert f["X/indptr"].is_virtual and f["X/data"].external
        assert all(os.path.isabs(name) for name, _, _ in f["X/data"].external)
        assert pd.Index(f["obs"].attrs["column-order"]).is_unique
