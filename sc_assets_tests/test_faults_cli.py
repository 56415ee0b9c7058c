"""``sc-assets ingest`` under faults, as a user meets them: a full disk, a killed worker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from sc_assets.batches import batch_keys
from sc_assets.core.count_matrix_writer import write_count_matrix
from sc_assets.core.demo import write_demo_series
from sc_assets.core.demo_layouts import demo_counts
from sc_assets_tests.conftest import start_cli

SAMPLES = 12
SCALE = 0.012  # 110-130 cells: ~3 MB per sample file


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("series")
    return write_demo_series(folder, scale=SCALE, samples=SAMPLES, seed=5, workers=1)


@contextlib.contextmanager
def small_disk(folder: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of ``megabytes`` mounted on ``folder`` (the test skips where it cannot be)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs as a small disk here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_fails_the_samples_that_do_not_fit_with_one_line_each(tmp_path, series):
    data = tmp_path / "data"
    data.mkdir()
    for path in series:
        os.link(path, data / path.name)
    with small_disk(tmp_path / "storage", 16) as storage:
        ingest = start_cli("ingest", "--storage-dir", str(storage), cwd=tmp_path)
        out, err = ingest.communicate(timeout=600)
        assert ingest.returncode == 1, out + err
        assert "Traceback" not in out + err and "HDF5-DIAG" not in err, err
        rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
        keys = sorted(p.name.removesuffix("_count_matrix.csv.gz") for p in series)
        assert set(keys) <= set(rows) and "merged_adata" in rows  # every sample has a row
        failed = [k for k in keys if "ERROR" in rows[k]]
        assert 0 < len(failed) < SAMPLES, out
        for key in failed:
            assert f"no space left on device in {storage}/sample_adata: about " in rows[key]
            assert "MB needed" in rows[key] and "MB free" in rows[key]
        assert "merged_adata not built" in rows["merged_adata"]
        # nothing half-written, and what was written is whole
        assert [p.name for p in storage.rglob(".*")] == []
        written = sorted(p.stem for p in (storage / "sample_adata").glob("*.h5ad"))
        assert written == sorted(set(keys) - set(failed))
        for stem in written:
            assert ad.read_h5ad(storage / "sample_adata" / f"{stem}.h5ad").n_obs > 100


def _sample_being_read(pid: int, names: set[str]) -> str | None:
    """The input file a worker of ``pid`` holds open now, if one of ``names``."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{child}/fd").iterdir():
                target = os.readlink(fd)
                if os.path.basename(target) in names:
                    return f"{child}:{os.path.basename(target)}"
    return None


def ingest_killing_the_reader(
    tmp_path: Path, series: list[Path], n: int, big_key: str, *args: str
) -> dict[str, str]:
    """``sc-assets ingest`` of ``n`` samples and a larger one, ``big_key``, whose worker is
    killed while it reads that file (its read takes long enough to be caught). The summary
    rows by sample, once the ingest has exited 1 without a traceback."""
    data = tmp_path / "data"
    data.mkdir()
    counts = demo_counts(4, scale=0.25, seed=5)
    big = write_count_matrix(
        data / f"{big_key}_count_matrix.csv.gz", counts.X, counts.genes, counts.barcodes
    )
    for path in series[:n]:
        os.link(path, data / path.name)
    ingest = start_cli("ingest", *args, cwd=tmp_path)
    deadline, victim = time.monotonic() + 300, None
    while victim is None and time.monotonic() < deadline and ingest.poll() is None:
        victim = _sample_being_read(ingest.pid, {big.name})
        time.sleep(0.002)
    assert victim is not None, "never saw a worker reading the big sample"
    os.kill(int(victim.split(":")[0]), signal.SIGKILL)
    out, err = ingest.communicate(timeout=600)
    assert ingest.returncode == 1, out + err
    assert "Traceback" not in out + err, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "ERROR: worker process killed by SIGKILL" in rows[big_key], out
    others = [p.name.removesuffix("_count_matrix.csv.gz") for p in series[:n]]
    assert all(rows[key].rstrip().endswith("ok") for key in others), out
    assert f"{big_key}: never materialized" in rows["merged_adata"]
    return rows


def test_a_killed_worker_fails_only_its_sample_and_a_second_ingest_completes(tmp_path, series):
    ingest_killing_the_reader(tmp_path, series, 4, "GSM9999999_Big1")
    again = start_cli("ingest", cwd=tmp_path)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, out + err
    assert ad.read_h5ad(tmp_path / "storage" / "merged_adata.h5ad").obs["sample"].nunique() == 5


def test_a_worker_killed_mid_batch_fails_only_the_sample_it_was_building(tmp_path, series):
    """Runs hold batches of samples: the kill costs the one being built, not its neighbours."""
    # Second in partition order, so with 9 samples on one worker (batches of 3) its batch is
    # GSM5320459_Ctrl1 (stored before the kill), the big one, then GSM5320460_Ctrl2.
    ingest_killing_the_reader(tmp_path, series, 8, "GSM5320459_Ctrl9", "--workers", "1")
    with DagsterInstance.from_config(str(tmp_path / ".dagster_home")) as instance:
        order = instance.get_dynamic_partitions("samples")
        runs = {
            tuple(batch_keys(order, run.tags)): run.status
            for run in instance.get_runs(RunsFilter(job_name="ingest_sample"))
        }
    assert runs[("GSM5320459_Ctrl1", "GSM5320459_Ctrl9", "GSM5320460_Ctrl2")] == (
        DagsterRunStatus.FAILURE
    )
    assert runs[("GSM5320460_Ctrl2",)] == DagsterRunStatus.SUCCESS  # what it had not reached
