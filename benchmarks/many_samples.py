"""Many small samples: ``sc-assets ingest`` of studies of 60 and 240 samples of ~135 cells
against the tutorial's script, side by side (issue 16).

Small samples are where the per-sample overhead shows: each parses in a few hundredths of a
second, so a study's time is the platform's bookkeeping (runs, events, checks, files), not the
parse. Each size's ingest and tutorial alternate (A B A B); per-sample time is the ingest's
wall time over its samples, which a flat per-sample cost keeps equal at both sizes.
"""

from __future__ import annotations

import os
import shutil
import time

from benchmarks.measure import PYTHON, Measurement, median, run
from benchmarks.report import Check, Section, Table, megabytes, ratio, seconds
from benchmarks.sections import Context, _items, measure_ingest
from benchmarks.series import CACHE_DIR, ensure_series

#: ~125-145 cells per sample: the issue's "120-145 cells each", 33,538 genes, ~95% zeros.
SMALL_SCALE = 0.015


def section(ctx: Context) -> Section:
    """The section: every size's ingest and tutorial, alternated."""
    sizes = ctx.config.many_sizes
    section = Section("many_samples", "Many small samples: sc-assets ingest vs tutorial")
    folder = ctx.work if ctx.config.smoke else CACHE_DIR
    series = {n: ensure_series(folder, scale=SMALL_SCALE, samples=n) for n in sizes}
    workers = os.cpu_count() or 1
    ctx.settle()
    ingests: dict[int, list[Measurement]] = {n: [] for n in sizes}
    tutorials: dict[int, list[Measurement]] = {n: [] for n in sizes}
    phases: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    for rep in range(ctx.config.many_reps):
        for n in sizes:
            data_dir = series[n][0].parent
            home, storage = ctx.work / f"many-home-{n}-{rep}", ctx.work / f"many-storage-{n}"
            t_start = time.time()
            ingest = measure_ingest(ctx, section, f"ingest-{n}", data_dir, storage, home, workers)
            ingests[n].append(ingest)
            t_end = time.time()
            records = run(_items("runs", home)).result["runs"]
            phases[n].append(_phases(records, t_start, t_end))
            shutil.rmtree(home)
            shutil.rmtree(storage)
            out = ctx.work / "tutorial-many.h5ad"
            tutorial = [PYTHON, "-m", "benchmarks.tutorial", "series", str(data_dir), str(out)]
            tutorials[n].append(ctx.measure(section, f"tutorial-{n}", tutorial))
            out.unlink()

    table = Table(
        [
            "samples",
            "tutorial s",
            "ingest s",
            "tutorial / ingest",
            "ingest per sample s",
            "runs",
            "start + pin s",
            "samples s",
            "merge s",
            "peak RSS MB: tutorial / ingest",
        ]
    )
    raw: dict[str, dict[str, float]] = {}
    for n in sizes:
        tut = median([m.wall_s for m in tutorials[n]])
        ing = median([m.wall_s for m in ingests[n]])
        p = {key: median([ph[key] for ph in phases[n]]) for key in phases[n][0]}
        raw[str(n)] = {"tutorial_s": tut, "ingest_s": ing, **p}
        raw[str(n)]["tutorial_peak_mb"] = median([m.peak_rss_mb for m in tutorials[n]])
        raw[str(n)]["ingest_peak_mb"] = median([m.peak_rss_mb for m in ingests[n]])
        table.rows.append(
            [
                str(n),
                seconds(tut),
                seconds(ing),
                ratio(tut / ing),
                seconds(ing / n),
                f"{p['runs']:.0f}",
                seconds(p["start_s"]),
                seconds(p["samples_s"]),
                seconds(p["merge_s"]),
                f"{megabytes(raw[str(n)]['tutorial_peak_mb'])} / "
                f"{megabytes(raw[str(n)]['ingest_peak_mb'])}",
            ]
        )
    section.raw = raw
    section.tables.append(
        (
            f"Studies of {' and '.join(map(str, sizes))} demo samples at scale {SMALL_SCALE} "
            "(~135 cells, 33,538 genes each). Medians of "
            f"{ctx.config.many_reps} alternated runs; ingest = every sample_adata with its six "
            "checks, the reference pin and the merge, fresh Dagster home and storage each "
            "(phases from the run records: start + pin = from the command's start to the "
            "first sample run; samples = first sample run's start to the last one's end).",
            table,
        )
    )
    largest, smallest = max(sizes), min(sizes)
    big = raw[str(largest)]
    speedup = big["tutorial_s"] / big["ingest_s"]
    section.checks.append(
        Check(
            f"sc-assets ingest of {largest} small samples >= 3x faster than the tutorial script",
            f"{ratio(speedup)} ({seconds(big['ingest_s'])} s vs {seconds(big['tutorial_s'])} s)",
            speedup >= 3,
        )
    )
    per_big = big["ingest_s"] / largest
    per_small = raw[str(smallest)]["ingest_s"] / smallest
    section.checks.append(
        Check(
            f"per-sample cost flat: {largest} samples within 1.1x of {smallest} per sample",
            f"{ratio(per_big / per_small)} ({seconds(per_big)} s vs {seconds(per_small)} s "
            "per sample)",
            per_big / per_small <= 1.1,
        )
    )
    return section


def _phases(records: list[dict], t_start: float, t_end: float) -> dict[str, float]:
    """Where one ingest's time went, from its run records."""
    samples = [r for r in records if r["job"] == "ingest_sample"]
    (merge,) = [r for r in records if r["job"] == "merge_samples"]
    first = min(r["start"] for r in samples)
    last = max(r["end"] for r in samples)
    return {
        "runs": float(len(samples)),
        "start_s": first - t_start,
        "samples_s": last - first,
        "merge_s": merge["end"] - merge["start"],
        "exit_s": t_end - merge["end"],
    }
