"""Ticks of ``new_samples_sensor`` over a folder of many small sample files.

``python -m benchmarks.sensor_tick FOLDER N_FILES`` writes ``N_FILES`` small valid sample files
(modified two minutes ago, so they count as settled), then evaluates the sensor the way the
daemon does (cursor carried over, partitions added, observations recorded) on a persistent
SQLite instance, with ``reference_genes`` pretended pinned:

* the first tick (every file new; the sensor releases at most ``MAX_FILES_PER_TICK`` of them,
  by design, and hashes those);
* the ticks that release the rest, until none is left;
* steady-state ticks (nothing changed).

Each tick's sensor evaluation is timed apart from applying its result (the daemon's work).
Prints the timings as one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from dagster import (
    AssetMaterialization,
    DagsterInstance,
    DeleteDynamicPartitionsRequest,
    SensorResult,
    build_sensor_context,
)

from sc_assets.batches import batch_keys
from sc_assets.dagster_home import ensure_dagster_home
from sc_assets.partitions import SAMPLES_PARTITIONS_NAME
from sc_assets.resources import SampleInbox
from sc_assets.sensors import MAX_FILES_PER_TICK, build_new_samples_sensor

STEADY_TICKS = 5


def write_files(data_dir: Path, n_files: int) -> None:
    """``n_files`` distinct, valid, tiny count matrices with settled modification times."""
    data_dir.mkdir(parents=True, exist_ok=True)
    settled = time.time() - 120
    for i in range(n_files):
        path = data_dir / f"GSM{9_000_000 + i}_Ctrl1_count_matrix.csv.gz"
        text = f",AAAC-{i},AAAG-{i}\nMT-CO1,1,0\nGENE1,0,{i % 7 + 1}\n"
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
        os.utime(path, (settled, settled))


def apply(instance: DagsterInstance, result: SensorResult) -> None:
    """Apply a tick's partition requests and observations, as the daemon does."""
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, DeleteDynamicPartitionsRequest):
            for key in request.partition_keys or []:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
        else:
            instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys or [])
            )
    for event in result.asset_events:
        instance.report_runless_asset_event(event)


def tick_all(folder: Path, n_files: int) -> dict[str, Any]:
    """Write the files, then tick until every file is released and a few ticks more."""
    data_dir = folder / "data"
    write_files(data_dir, n_files)
    home = ensure_dagster_home(folder / "dagster_home")
    sensor = build_new_samples_sensor(30)
    inbox = SampleInbox(data_dir=str(data_dir))
    ticks: list[dict[str, Any]] = []
    with DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(AssetMaterialization("reference_genes"))
        cursor: str | None = None
        released = 0
        while len(ticks) < 2 * n_files // MAX_FILES_PER_TICK + STEADY_TICKS + 2:
            t0 = time.perf_counter()
            with build_sensor_context(
                instance=instance, cursor=cursor, resources={"inbox": inbox}
            ) as context:
                result = sensor(context)
            t1 = time.perf_counter()
            apply(instance, result)
            t2 = time.perf_counter()
            cursor = result.cursor
            runs = len(result.run_requests or [])
            order = instance.get_dynamic_partitions(SAMPLES_PARTITIONS_NAME)
            samples = sum(len(batch_keys(order, r.tags)) for r in result.run_requests or [])
            released += samples
            ticks.append({"tick_s": t1 - t0, "apply_s": t2 - t1, "runs": runs, "samples": samples})
            steady = [t for t in ticks if t["runs"] == 0]
            if released >= n_files and len(steady) >= STEADY_TICKS:
                break
    if released != n_files:
        raise RuntimeError(f"the sensor released {released} of {n_files} files")
    first, draining = ticks[0], [t for t in ticks[1:] if t["runs"]]
    steady = [t for t in ticks if not t["runs"]]
    return {
        "files": n_files,
        "first_tick_s": first["tick_s"],
        "first_apply_s": first["apply_s"],
        "first_runs": first["runs"],
        "first_samples": first["samples"],
        "draining_ticks": len(draining),
        "draining_tick_median_s": statistics.median(t["tick_s"] for t in draining)
        if draining
        else float("nan"),
        "steady_tick_median_s": statistics.median(t["tick_s"] for t in steady),
        "cursor_bytes": len(cursor or ""),
    }


def main() -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sensor_tick")
    parser.add_argument("folder", type=Path)
    parser.add_argument("n_files", type=int)
    args = parser.parse_args()
    print(json.dumps(tick_all(args.folder, args.n_files)))


if __name__ == "__main__":
    main()
