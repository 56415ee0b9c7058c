"""Bad input and dying processes never lose or corrupt data that was already good."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata as ad

from sc_assets_tests.conftest import copy_samples, ingest, run

KEY = "GSM5320459_Ctrl1"

# Runs the real ingest_sample job in a child process whose AnnData.write_h5ad writes part of the
# file, says so, and hangs: the test then SIGKILLs the whole run mid-write.
HANGING_WRITER = textwrap.dedent(
    """
    import sys, time
    import anndata as ad
    from dagster import DagsterInstance

    def hanging_write(self, filename, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"\\x89HDF\\r\\n\\x1a\\n" + b"partial" * 1000)
            f.flush()
        open(sys.argv[2], "w").close()  # "I am writing now"
        time.sleep(600)

    ad.AnnData.write_h5ad = hanging_write
    from sc_assets.definitions import defs

    with DagsterInstance.get() as instance:
        defs.resolve_job_def("ingest_sample").execute_in_process(
            instance=instance, partition_key=sys.argv[1]
        )
    """
)


def h5ad_path(settings, key=KEY) -> Path:
    return Path(settings.storage_dir, "sample_adata", f"{key}.h5ad")


def test_sigkill_during_a_write_loses_nothing(platform, demo_files, tmp_path):
    settings = platform.settings
    copy_samples(demo_files, settings.data_dir, [KEY])
    ingest(platform, [KEY])
    good = h5ad_path(settings).read_bytes()

    marker = tmp_path / "writing"
    child = subprocess.Popen(
        [sys.executable, "-c", HANGING_WRITER, KEY, str(marker)], env=os.environ.copy()
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, "the run ended before it started writing"
        assert time.monotonic() < deadline, "the run never started writing"
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)

    folder = h5ad_path(settings).parent
    leftovers = [p for p in folder.iterdir() if p.name != f"{KEY}.h5ad"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{KEY}.h5ad.")
    assert h5ad_path(settings).read_bytes() == good  # readers still see the good file
    assert ad.read_h5ad(h5ad_path(settings)).n_obs > 0

    assert run(platform, "ingest_sample", KEY).success  # the next run succeeds...
    assert [p.name for p in folder.iterdir()] == [f"{KEY}.h5ad"]  # ...and cleans up


def test_a_malformed_replacement_fails_alone_and_keeps_the_good_h5ad(platform, demo_files):
    settings = platform.settings
    keys = [KEY, "GSM5320460_Ctrl2"]
    copy_samples(demo_files, settings.data_dir, keys)
    ingest(platform, keys)
    good = h5ad_path(settings).read_bytes()
    merged = Path(settings.storage_dir, "merged_adata.h5ad").read_bytes()

    source = settings.data_dir / f"{KEY}_count_matrix.csv.gz"
    source.write_bytes(source.read_bytes()[:5000])  # a truncated download replaces the file
    bad = run(platform, "ingest_sample", KEY)
    assert not bad.success
    (failure,) = [e for e in bad.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.cause.message
    assert "CountMatrixError" in message and source.name in message
    assert h5ad_path(settings).read_bytes() == good
    assert sorted(p.name for p in h5ad_path(settings).parent.iterdir()) == sorted(
        f"{k}.h5ad" for k in keys
    )
    assert run(platform, "ingest_sample", keys[1]).success  # the others still run

    merge = run(platform, "merge_samples")
    assert not merge.success  # the sample's latest run failed: the merge refuses...
    assert Path(settings.storage_dir, "merged_adata.h5ad").read_bytes() == merged  # ...intact
