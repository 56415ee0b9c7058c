"""merged_adata on local storage: incremental updates, what each says, and the export."""

from __future__ import annotations

import os
import shutil

import anndata as ad
import numpy as np
import pytest
from dagster import AssetKey

from sc_assets.cli import main
from sc_assets.core.samples import sample_label
from sc_assets_tests.conftest import copy_samples, ingest, run

MERGED = AssetKey("merged_adata")


def merge_metadata(platform) -> dict:
    event = platform.instance.get_latest_materialization_event(MERGED)
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def assert_equals_concat(platform, keys: list[str]) -> None:
    storage = platform.settings.storage_dir
    parts = {
        sample_label(k): ad.read_h5ad(f"{storage}/sample_adata/{k}.h5ad") for k in sorted(keys)
    }
    merged = ad.read_h5ad(f"{storage}/merged_adata.h5ad")
    expected = ad.concat(parts, join="inner", merge="same", label="sample")
    names = [f"{label}-{name}" for label, part in parts.items() for name in part.obs_names]
    assert list(merged.obs_names) == names
    assert (merged.X != expected.X).nnz == 0
    assert (merged.layers["counts"] != expected.layers["counts"]).nnz == 0
    assert list(merged.obs["sample"]) == list(expected.obs["sample"])


def test_add_replace_remove_write_only_what_changed(platform, demo_files):
    data_dir = platform.settings.data_dir
    keys = copy_samples(demo_files, data_dir, sorted(demo_files)[:3])
    ingest(platform, keys)
    first = merge_metadata(platform)
    assert first["merge_mode"] == "full" and first["full_reason"]  # no merged file yet
    full_bytes = first["bytes_written"]
    assert_equals_concat(platform, keys)

    new = sorted(demo_files)[3]
    copy_samples(demo_files, data_dir, [new])
    platform.instance.add_dynamic_partitions("samples", [new])
    assert run(platform, "ingest_sample", new).success
    assert run(platform, "merge_samples").success
    added = merge_metadata(platform)
    assert added["merge_mode"] == "incremental" and added["full_reason"] == ""
    assert (added["samples_added"], added["samples_replaced"], added["samples_removed"]) == (
        [new], [], [],
    )  # fmt: skip
    # about the new sample's bytes plus obs: far less than the three samples' full merge
    assert added["bytes_written"] < 0.6 * full_bytes
    assert_equals_concat(platform, [*keys, new])

    # a sample re-ingested from other content: replaced, its matrices only
    shutil.copy(demo_files[sorted(demo_files)[4]], data_dir / demo_files[keys[0]].name)
    assert run(platform, "ingest_sample", keys[0]).success
    assert run(platform, "merge_samples").success
    replaced = merge_metadata(platform)
    assert replaced["merge_mode"] == "incremental"
    assert (replaced["samples_added"], replaced["samples_replaced"]) == ([], [keys[0]])
    assert_equals_concat(platform, [*keys, new])

    # a sample whose partition is gone: removed, obs only
    platform.instance.delete_dynamic_partition("samples", keys[1])
    assert run(platform, "merge_samples").success
    removed = merge_metadata(platform)
    assert removed["merge_mode"] == "incremental" and removed["samples_removed"] == [keys[1]]
    # the new view only: obs, and var (33,538 genes: most of it for samples this small)
    assert removed["bytes_written"] < min(0.15 * full_bytes, added["bytes_written"])
    assert_equals_concat(platform, [keys[0], keys[2], new])


def test_a_per_sample_file_changed_by_hand_never_changes_the_merge(platform, demo_files):
    keys = copy_samples(demo_files, platform.settings.data_dir, sorted(demo_files)[:2])
    ingest(platform, keys)
    storage = platform.settings.storage_dir
    before = ad.read_h5ad(f"{storage}/merged_adata.h5ad")
    # rewritten in place (write_h5ad truncates the same file), then deleted
    sample = f"{storage}/sample_adata/{keys[0]}.h5ad"
    other = ad.read_h5ad(sample)
    other.X = other.X * 2
    other.write_h5ad(sample)
    after = ad.read_h5ad(f"{storage}/merged_adata.h5ad")
    assert (after.X != before.X).nnz == 0
    os.remove(sample)
    assert (ad.read_h5ad(f"{storage}/merged_adata.h5ad").X != before.X).nnz == 0


def test_a_missing_part_fails_loudly_and_export_says_how_to_rebuild(platform, demo_files, capsys):
    keys = copy_samples(demo_files, platform.settings.data_dir, sorted(demo_files)[:2])
    ingest(platform, keys)
    storage = platform.settings.storage_dir
    parts = sorted((p for p in _parts(storage) if p.suffix == ".h5"), key=str)
    parts[0].unlink()
    with pytest.raises(OSError):  # never zeros or another sample's numbers
        ad.read_h5ad(f"{storage}/merged_adata.h5ad")
    out = platform.settings.data_dir.parent / "out.h5ad"
    assert main(["export", "merged", str(out)]) == 2
    error = capsys.readouterr().err
    line = error.splitlines()[-1]  # (the runs above logged to stderr too)
    assert line.startswith("sc-assets: ") and "missing" in line and "rebuild" in line.lower()
    assert not out.exists()


def test_export_writes_a_self_contained_copy(platform, demo_files, tmp_path):
    keys = copy_samples(demo_files, platform.settings.data_dir, sorted(demo_files)[:3])
    ingest(platform, keys)
    assert main(["export", "merged", str(tmp_path / "shared.h5ad")]) == 0
    shutil.rmtree(_parts_folder(platform.settings.storage_dir))  # needs nothing else
    shared = ad.read_h5ad(tmp_path / "shared.h5ad")
    parts = [ad.read_h5ad(f"{platform.settings.storage_dir}/sample_adata/{k}.h5ad") for k in keys]
    assert shared.n_obs == sum(p.n_obs for p in parts)
    assert np.array_equal(shared.X.toarray(), ad.concat(parts, join="inner").X.toarray())


def _parts_folder(storage: str):
    from sc_assets.core.incremental import parts_folder

    return parts_folder(f"{storage}/merged_adata.h5ad")


def _parts(storage: str):
    return list(_parts_folder(storage).iterdir())
