"""The benchmark suite's smoke run: every section completes and reports numbers.

Not a timed test: nothing is compared with a target here (``make bench`` does that at full
size). It only guards that ``python -m benchmarks`` keeps working.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.registered import MEASURES
from benchmarks.series import CACHE_DIR

PROJECT_DIR = Path(__file__).resolve().parent.parent
SECTIONS = {
    "one_sample": "One sample",
    "end_to_end": "End to end",
    "merge": "Merge",
    "compression": "Storage",
    "sensor": "Sensor",
    "readers": "Readers",
    "many_samples": "Many small samples",
    "registered": "Many registered samples",
    "incremental": "Incremental merge",
}
#: Measured by the full run only (the smoke run says so; test_distributed.py covers it).
FULL_ONLY = {"cluster": "Two Celery workers"}


def _numbers(value: Any) -> Iterator[float]:
    """Every number in a nested JSON value."""
    if isinstance(value, bool | str) or value is None:
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)


def _snapshot(path: Path) -> dict[str, int]:
    """Names and modification times under ``path`` (empty if it does not exist)."""
    if not path.exists():
        return {}
    if path.is_file():
        return {path.name: path.stat().st_mtime_ns}
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in path.rglob("*")}


def test_smoke_run_reports_every_section(tmp_path: Path) -> None:
    report, cache = PROJECT_DIR / "BENCHMARKS.md", _snapshot(CACHE_DIR)
    before = _snapshot(report)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path)],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == set(SECTIONS) | set(FULL_ONLY)
    for key, title in FULL_ONLY.items():
        assert f"== {title}" in proc.stdout and "Not measured" in results[key]["notes"][0]
    for key, title in SECTIONS.items():
        assert f"== {title}" in proc.stdout
        numbers = list(_numbers(results[key]["raw"]))
        assert len(numbers) >= 5, key
        assert all(math.isfinite(n) for n in numbers), (key, results[key]["raw"])
        assert results[key]["checks"], key
    one = results["one_sample"]["raw"]
    assert all(v > 0 for v in one["wall_s"].values())
    assert all(v > 0 for v in one["peak_rss_mb"].values())
    e2e = results["end_to_end"]["raw"]
    assert e2e["ingest_wall_s"] > 0 and e2e["tutorial_wall_s"] > 0
    assert e2e["merged_dtypes"] == {"data": "float32", "indices": "int32"}
    assert {k.split("_")[0] for k in results["merge"]["raw"] if k[-1].isdigit()} == {
        "merge",
        "concat",
    }
    compression = results["compression"]["raw"]
    assert {"none", "lzf", "gzip"} <= set(compression)
    assert compression["recommended"] in ("none", "lzf", "gzip")
    assert results["sensor"]["raw"]["first_samples"] == 100
    assert results["sensor"]["raw"]["first_runs"] == 2  # batches: one per run slot
    readers = results["readers"]["raw"]
    assert set(readers) == {"10x_h5", "10x_mtx", "h5ad"}
    assert all(r["ours_call_s"] > 0 and r["theirs_call_s"] > 0 for r in readers.values())
    many = results["many_samples"]["raw"]
    assert set(many) == {"2", "4"}
    assert all(m["ingest_s"] > 0 and m["tutorial_s"] > 0 and m["runs"] >= 1 for m in many.values())
    registered = results["registered"]["raw"]
    assert set(registered) == {"3", "6"}
    assert all(set(r) == set(MEASURES) and min(r.values()) > 0 for r in registered.values())

    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Machine" in markdown and "## Where the time goes" in markdown
    assert "== Where the time goes ==" in proc.stdout
    # The smoke run leaves no scratch files, and never touches BENCHMARKS.md or the cache.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BENCHMARKS.md", "results.json"]
    assert _snapshot(report) == before
    assert _snapshot(CACHE_DIR) == cache
