"""The incremental merge (issue 20): add, replace, remove one sample at 12 and 48 samples,
against today's full merge, side by side.

The study is the end-to-end section's per-sample files (full size: ~9,000 cells x 33,538
genes each); 48 samples reuse the 12 files under other labels (each label gets its own part,
so the bytes are real). The sample added is the first file under a new label, the replacement
another file under an existing label. Times alternate between the methods, repeated; medians.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

from benchmarks.report import Check, Section, Table, megabytes, ratio, seconds

#: The issue's targets: adding one sample to 12 costs at most this share of the full merge...
ADD_SHARE = 0.25
#: ...and adding one to 48 at most this much more than adding one to 12 ("flat in N").
FLAT = 1.10


def section(ctx) -> Section:
    assert ctx.storage is not None, "the end-to-end section provides the per-sample files"
    section = Section("incremental", "Incremental merge: add, replace, remove one sample")
    files = sorted((ctx.storage / "sample_adata").glob("*.h5ad"))
    sizes = (len(files), 4 * len(files)) if not ctx.config.smoke else (len(files),)
    reps = 1 if ctx.config.smoke else 3
    table = Table(["samples", "operation", "wall s", "MB written", "vs full merge"])
    numbers: dict[str, dict[str, float]] = {}
    for n in sizes:
        runs = _study(ctx.work / f"incremental-{n}", files, n, reps)
        full_s = statistics.median(t for t, _ in runs["full merge (today)"])
        for name, measured in runs.items():
            wall = statistics.median(t for t, _ in measured)
            written = statistics.median(b for _, b in measured)
            numbers.setdefault(str(n), {})[name] = wall
            numbers[str(n)][f"{name} bytes"] = written
            table.rows.append(
                [str(n), name, seconds(wall), megabytes(written / 1e6), ratio(wall / full_s)]
            )
    section.tables.append(
        (
            f"Full-size samples, {reps} interleaved runs each (medians); the full merge is "
            "merge_h5ad into a temporary file renamed into place, as before this change.",
            table,
        )
    )
    first = numbers[str(sizes[0])]
    share = first["add one"] / first["full merge (today)"]
    section.checks.append(
        Check(
            f"add one sample to {sizes[0]}: at most {ADD_SHARE}x the full merge's time",
            f"{ratio(share)} ({seconds(first['add one'])} s vs "
            f"{seconds(first['full merge (today)'])} s)",
            share <= ADD_SHARE,
        )
    )
    if len(sizes) > 1:
        last = numbers[str(sizes[-1])]
        growth = last["add one"] / first["add one"]
        section.checks.append(
            Check(
                f"the same cost at {sizes[-1]} samples (within {FLAT:.2f}x of {sizes[0]})",
                f"{seconds(last['add one'])} s vs {seconds(first['add one'])} s: {ratio(growth)}",
                growth <= FLAT,
            )
        )
    section.notes.append(
        "Bytes written: the new sample's part (its X data and indices, once) plus the new view "
        "(obs of every cell, var, indptr); a removal writes the view only."
    )
    section.raw = numbers
    return section


def _study(work: Path, files: list[Path], n: int, reps: int) -> dict[str, list[tuple[float, int]]]:
    """(seconds, bytes written) of each operation on a study of ``n`` samples, ``reps`` times
    interleaved: the full merge of n + 1 samples, then adding, replacing, removing one."""
    from sc_assets.core import incremental as inc
    from sc_assets.core.atomic import atomic_path
    from sc_assets.core.merge import merge_h5ad

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    base = [(f"S{i:03d}", files[i % len(files)]) for i in range(n)]
    added = [*base, ("Added", files[0])]
    replaced = [
        (label, files[-1]) if i == 1 else (label, path) for i, (label, path) in enumerate(added)
    ]
    view, full = work / "merged_adata.h5ad", work / "full.h5ad"
    inc.update_merged(base, view)  # the study as it stands: its parts exist
    runs: dict[str, list[tuple[float, int]]] = {}
    for _ in range(reps):
        start = time.perf_counter()
        with atomic_path(full) as tmp:
            merge_h5ad(added, tmp)
        runs.setdefault("full merge (today)", []).append(
            (time.perf_counter() - start, full.stat().st_size)
        )
        full.unlink()
        operations = (("add one", added), ("replace one", replaced), ("remove one", replaced[:-1]))
        for name, sources in operations:
            start = time.perf_counter()
            written = inc.update_merged(sources, view).bytes_written
            runs.setdefault(name, []).append((time.perf_counter() - start, written))
        inc.update_merged(base, view)  # back as it stood (untimed)
        inc.collect_garbage(view, grace_seconds=0)
    shutil.rmtree(work)
    return runs
