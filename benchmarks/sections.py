"""The benchmark sections: each measures processes and returns a :class:`Section`."""

from __future__ import annotations

import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from benchmarks.measure import PYTHON, Measurement, median, run, wait_for_quiet
from benchmarks.report import Check, Section, Table, megabytes, ratio, seconds
from sc_assets.core.names import parse_partition_key

COMPRESSIONS = ("none", "lzf", "gzip")

#: SC_ASSETS_H5AD_COMPRESSION's default (README, sc_assets/settings.py).
DOCUMENTED_COMPRESSION = "none"

#: The items of the one-sample comparison.
TUTORIAL = "tutorial recipe (pandas)"
READ = "read_count_matrix"
PARSE = "parse_count_matrix only"
ISAL = "isal decompression only"
GZIP = "gzip -dc > /dev/null"

#: Environment of every ``sc-assets ingest``: the documented defaults, whatever the caller's
#: environment says (an empty value means unset).
INGEST_ENV = {
    "SC_ASSETS_H5AD_COMPRESSION": "none",
    "SC_ASSETS_REFERENCE_GENES": "",
    "SC_ASSETS_MIN_CELLS": "",
    "SC_ASSETS_MAX_CELLS": "",
    "SC_ASSETS_MIN_ZERO_FRACTION": "",
}


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of a run."""

    smoke: bool
    scale: float
    samples: int
    merge_sizes: tuple[int, ...]
    warm_up: bool
    """Read the sample once, unmeasured, before the one-sample comparison (page cache)."""
    one_sample_reps: int
    tutorial_reps: int
    ingest_reps: int
    profile_reps: int
    merge_reps: int
    compression_reps: int
    sensor_files: int
    reader_reps: int
    many_sizes: tuple[int, ...]
    """Study sizes of the many-small-samples section."""
    many_reps: int
    registered_sizes: tuple[int, ...]
    """Samples registered in the interactivity section (issue 16's 100/300/1,000)."""
    quiet_wait_s: float
    """How long a section may wait for the other agents' CPU use to drop before it starts."""


FULL = Config(
    smoke=False,
    scale=1.0,
    samples=12,
    merge_sizes=(3, 6, 12),
    warm_up=True,
    one_sample_reps=3,
    tutorial_reps=2,
    ingest_reps=2,
    profile_reps=3,
    merge_reps=5,
    compression_reps=3,
    sensor_files=10_000,
    reader_reps=5,
    many_sizes=(60, 240),
    many_reps=2,
    registered_sizes=(100, 300, 1000),
    quiet_wait_s=60,
)

#: CI's version: tiny (scale 0.02 keeps every sample above the 100-cell minimum), one of each.
SMOKE = Config(
    smoke=True,
    scale=0.02,
    samples=2,
    merge_sizes=(1, 2),
    warm_up=False,
    one_sample_reps=1,
    tutorial_reps=1,
    ingest_reps=1,
    profile_reps=1,
    merge_reps=1,
    compression_reps=1,
    sensor_files=150,
    reader_reps=1,
    many_sizes=(2, 4),
    many_reps=1,
    registered_sizes=(3, 6),
    quiet_wait_s=0,
)


@dataclass
class Context:
    """What the sections share: the config, the input series and a scratch folder."""

    config: Config
    series: list[Path]
    work: Path
    storage: Path | None = None
    """The last ingest's storage folder (its per-sample files feed the merge sections)."""
    _logs: int = 0

    def measure(
        self,
        section: Section,
        name: str,
        command: Sequence[str],
        *,
        watch_tree: bool = False,
        **env: str,
    ) -> Measurement:
        """Run one item in a fresh process, log its stderr, record it in ``section``."""
        self._logs += 1
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{self._logs:03d}-{name}.log"
        measurement = run(command, env=env, log=log, watch_tree=watch_tree)
        section.measurements.append(measurement)
        return measurement

    def settle(self) -> None:
        """Before a section: wait (bounded) for the machine to be quiet."""
        if self.config.quiet_wait_s:
            wait_for_quiet(max_wait_s=self.config.quiet_wait_s)


def _items(*args: str | Path) -> list[str]:
    return [PYTHON, "-m", "benchmarks.items", *map(str, args)]


def _sample_files(storage: Path) -> list[tuple[str, Path]]:
    """(label, path) of the ingest's per-sample files in merge order (by partition key)."""
    files = sorted((storage / "sample_adata").glob("*.h5ad"))
    return [(parse_partition_key(f.stem).sample, f) for f in files]


def _pairs(sources: Sequence[tuple[str, Path]]) -> list[str]:
    return [f"{label}={path}" for label, path in sources]


def _stat(ms: Sequence[Measurement], key: str) -> float:
    """Median of a measurement attribute, or of an inner timing (``result`` key)."""
    if key in ("wall_s", "peak_rss_mb", "cpu_s", "others_cpu", "cores_used"):
        return median([getattr(m, key) for m in ms])
    return median([float(m.result[key]) for m in ms if key in m.result])


# -------------------------------------------------------------------------------------------
# One sample
# -------------------------------------------------------------------------------------------


def one_sample(ctx: Context) -> Section:
    """One sample: the tutorial recipe vs read_count_matrix vs decompression alone."""
    section = Section("one_sample", "One sample: tutorial recipe vs read_count_matrix")
    path = ctx.series[0]
    if ctx.config.warm_up:  # the file into the page cache, numba's compiled parser into its cache
        run(_items("read", path))
    items: dict[str, list[str]] = {
        TUTORIAL: [PYTHON, "-m", "benchmarks.tutorial", "sample", str(path)],
        READ: _items("read", path),
        PARSE: _items("parse", path),
        ISAL: _items("isal", path),
        GZIP: ["sh", "-c", f"gzip -dc {shlex.quote(str(path))} > /dev/null"],
    }
    ms: dict[str, list[Measurement]] = {name: [] for name in items}
    twice: list[Measurement] = []
    ctx.settle()
    for rep in range(ctx.config.one_sample_reps):
        for name, command in items.items():
            if name == TUTORIAL and rep >= ctx.config.tutorial_reps:
                continue
            ms[name].append(ctx.measure(section, name.split()[0], command))
        twice.append(ctx.measure(section, "read-twice", _items("read-twice", path)))

    wall = {name: _stat(m, "wall_s") for name, m in ms.items()}
    call = {name: _stat(m, "call_s") for name, m in ms.items()}
    call[GZIP] = wall[GZIP]  # a command: no inner timing
    table = Table(
        [
            "item", "runs", "wall s", "in-call s", "peak RSS MB", "CPU cores",
            "tutorial / item: wall", "in-call", "item / isal: in-call",
        ]
    )  # fmt: skip
    for name, m in ms.items():
        table.rows.append(
            [
                name,
                str(len(m)),
                seconds(wall[name]),
                seconds(call[name]),
                megabytes(_stat(m, "peak_rss_mb")),
                f"{_stat(m, 'cores_used'):.2f}",
                ratio(wall[TUTORIAL] / wall[name]),
                ratio(call[TUTORIAL] / call[name]),
                ratio(call[name] / call[ISAL]),
            ]
        )
    section.tables.append(
        (
            f"`{path.name}`: {path.stat().st_size / 1e6:.1f} MB gzipped, "
            f"{ms[ISAL][0].result['bytes'] / 1e6:,.0f} MB of CSV, "
            f"{int(ms[READ][0].result['nnz']):,} non-zeros. wall = the whole process "
            "(interpreter, imports); in-call = the call alone, timed inside the process after "
            "its imports.",
            table,
        )
    )
    calls = Table(["read_count_matrix", "in-call s", "/ isal", "user CPU s", "kernel CPU s",
                   "page faults"])  # fmt: skip
    for which in ("first", "second"):
        calls.rows.append(
            [
                f"{which} call of the process",
                seconds(_stat(twice, f"{which}_s")),
                ratio(_stat(twice, f"{which}_s") / call[ISAL]),
                seconds(_stat(twice, f"{which}_user_s")),
                seconds(_stat(twice, f"{which}_kernel_s")),
                f"{_stat(twice, f'{which}_page_faults'):,.0f}",
            ]
        )
    section.tables.append(
        (
            "read_count_matrix called twice in one process (interleaved with the items above), "
            "without `warm_up()`: the first call also loads numba's cached machine code; the "
            "second has it loaded, as an ingest worker has from its second sample on. Both map "
            "fresh pages for their arrays (glibc gives blocks this large back to the kernel "
            "when they are freed).",
            calls,
        )
    )
    speedup_wall, speedup_call = wall[TUTORIAL] / wall[READ], call[TUTORIAL] / call[READ]
    vs_isal = call[READ] / call[ISAL]
    warm_vs_isal = _stat(twice, "second_s") / call[ISAL]
    peak = _stat(ms[READ], "peak_rss_mb")
    section.checks += [
        Check(
            ">= 20x faster than the tutorial recipe (in-call: imports excluded on both sides)",
            f"{ratio(speedup_call)} in-call; {ratio(speedup_wall)} as whole processes",
            speedup_call >= 20,
        ),
        Check(
            "within 1.3x of isal decompression alone (in-call)",
            f"{ratio(vs_isal)} ({seconds(call[READ])} s vs {seconds(call[ISAL])} s); "
            f"parse_count_matrix alone {ratio(call[PARSE] / call[ISAL])}",
            vs_isal <= 1.3,
        ),
        Check(
            "within 1.3x of isal decompression alone (in-call, warm: the second call of a process)",
            f"{ratio(warm_vs_isal)} ({seconds(_stat(twice, 'second_s'))} s vs "
            f"{seconds(call[ISAL])} s)",
            warm_vs_isal <= 1.3,
        ),
        Check("peak RSS <= 800 MB (whole process)", f"{megabytes(peak)} MB", peak <= 800),
    ]
    import_s, load_s = _stat(ms[READ], "import_s"), _stat(ms[READ], "load_s")
    section.notes.append(
        f"read_count_matrix's process: {seconds(import_s)} s of imports and {seconds(load_s)} s"
        " loading the parser's compiled code from numba's cache (`warm_up()`, as ingest "
        f"workers do when they start) before the call; then {seconds(call[PARSE])} s of "
        f"parse_count_matrix and {seconds(call[READ] - call[PARSE])} s more for the QC sums, "
        "the counts copy, the AnnData and its QC columns."
    )
    section.raw = {
        "wall_s": wall,
        "call_s": call,
        "peak_rss_mb": {name: _stat(m, "peak_rss_mb") for name, m in ms.items()},
        "speedup_wall": speedup_wall,
        "speedup_call": speedup_call,
        "read_vs_isal_call": vs_isal,
        "read_twice": {key: _stat(twice, key) for key in twice[0].result},
        "read_warm_vs_isal_call": warm_vs_isal,
        "parse_vs_isal_call": call[PARSE] / call[ISAL],
        "read_peak_rss_mb": peak,
        "read_import_s": import_s,
        "read_load_s": load_s,
    }
    return section


# -------------------------------------------------------------------------------------------
# End to end
# -------------------------------------------------------------------------------------------


def measure_ingest(
    ctx: Context,
    section: Section,
    name: str,
    data_dir: Path,
    storage: Path,
    home: Path,
    workers: int,
) -> Measurement:
    """``sc-assets ingest`` of ``data_dir`` in a fresh process, with its own Dagster home."""
    command = [
        *_ingest_command(), "ingest", "--data-dir", str(data_dir),
        "--storage-dir", str(storage), "--workers", str(workers),
    ]  # fmt: skip
    env = {"DAGSTER_HOME": str(home), **INGEST_ENV}
    return ctx.measure(section, name, command, watch_tree=True, **env)


def _ingest_command() -> list[str]:
    script = Path(sys.executable).with_name("sc-assets")
    return [str(script)] if script.exists() else [PYTHON, "-m", "sc_assets.cli"]


def _phases(
    runs: list[dict[str, Any]], t_start: float, t_end: float, workers: int
) -> dict[str, float]:
    """Where one ingest's wall time went, from its run records (wall-clock seconds).

    The ``workers`` earliest sample runs are each worker's first: they also pay the imports
    done on first use (matplotlib); ``later_run_s`` is only
    there when some sample ran after them.
    """
    by_job: dict[str, list[dict[str, Any]]] = {}
    for record in runs:
        by_job.setdefault(record["job"], []).append(record)
    (ref,) = by_job["pin_reference_genes"]
    (merge,) = by_job["merge_samples"]
    samples = sorted(by_job["ingest_sample"], key=lambda r: r["start"])
    first = samples[0]["start"]
    last = max(r["end"] for r in samples)
    durations = [r["end"] - r["start"] for r in samples]
    steps = [r["step_s"] for r in samples]
    later = {"later_run_s": median(durations[workers:])} if durations[workers:] else {}
    return {
        **later,
        "first_run_s": median(durations[:workers]),
        "parent_start_s": ref["start"] - t_start,
        "reference_s": ref["end"] - ref["start"],
        "workers_start_s": first - ref["end"],
        "samples_s": last - first,
        "to_merge_s": merge["start"] - last,
        "merge_s": merge["end"] - merge["start"],
        "merge_step_s": merge["step_s"],
        "exit_s": t_end - merge["end"],
        "sample_run_s": median(durations),
        "sample_step_s": median(steps),
        "sample_run_sum_s": sum(durations),
        "runs": float(len(samples)),
    }


def end_to_end(ctx: Context) -> Section:
    """The whole series through ``sc-assets ingest`` vs the tutorial script."""
    n = len(ctx.series)
    section = Section("end_to_end", f"End to end: {n} samples, sc-assets ingest vs tutorial")
    data_dir = ctx.series[0].parent
    workers = os.cpu_count() or 1
    ctx.settle()
    ingests: list[Measurement] = []
    phases: list[dict[str, float]] = []
    tutorial: Measurement | None = None
    for rep in range(ctx.config.ingest_reps):
        if ctx.storage is not None:  # only the last ingest's files are kept
            shutil.rmtree(ctx.storage)
        home, storage = ctx.work / f"dagster_home-{rep}", ctx.work / f"storage-{rep}"
        t_start = time.time()
        ingests.append(measure_ingest(ctx, section, "ingest", data_dir, storage, home, workers))
        t_end = time.time()
        ctx.storage = storage
        runs = run(_items("runs", home)).result["runs"]
        phases.append(_phases(runs, t_start, t_end, workers))
        shutil.rmtree(home)
        if rep == 0:  # A B A: the tutorial between two ingests
            tutorial = _tutorial_series(ctx, section, data_dir)
    if tutorial is None:
        tutorial = _tutorial_series(ctx, section, data_dir)
    first, second = ctx.series[0], ctx.series[1 % n]
    profiles: dict[str, list[Measurement]] = {"alone": [], "pair": []}
    for _ in range(ctx.config.profile_reps):
        command = _items("profile", first, ctx.work / "p.h5ad")
        profiles["alone"].append(ctx.measure(section, "profile", command))
        (ctx.work / "p.h5ad").unlink()
        command = _items("profile-pair", first, second, ctx.work)
        profiles["pair"].append(ctx.measure(section, "profile-pair", command))
    alone, pair = ({key: _stat(ms, key) for key in ms[0].result} for ms in profiles.values())
    imports = ctx.measure(section, "import", _items("import-definitions"))

    wall, peak = _stat(ingests, "wall_s"), _stat(ingests, "peak_rss_mb")
    cores = _stat(ingests, "cores_used")
    at_once = phases_median(phases, "sample_run_sum_s") / phases_median(phases, "samples_s")
    tree = {
        kind: median([m.tree_mb.get(kind, 0.0) for m in ingests]) for kind in ("main", "worker")
    }
    speedup = tutorial.wall_s / wall
    merged = ctx.storage / "merged_adata.h5ad"
    dtypes = _matrix_dtypes(merged)
    table = Table(["", "runs", "wall s", "peak RSS MB", "CPU cores", "output MB", "X dtype"])
    table.rows += [
        [
            "tutorial script",
            "1",
            seconds(tutorial.wall_s),
            megabytes(tutorial.peak_rss_mb),
            f"{tutorial.cores_used:.2f}",
            megabytes(tutorial.result["bytes"] / 1e6),
            tutorial.result["data_dtype"],
        ],
        [
            f"sc-assets ingest --workers {workers}",
            str(len(ingests)),
            seconds(wall),
            f"{megabytes(peak)} (main {megabytes(tree['main'])}, "
            f"workers {megabytes(tree['worker'])})",
            f"{cores:.2f}",
            megabytes(merged.stat().st_size / 1e6),
            f"{dtypes['data']} (indices {dtypes['indices']})",
        ],
    ]
    section.tables.append(
        (
            f"{n} samples ({sum(p.stat().st_size for p in ctx.series) / 1e6:,.0f} MB gzipped). "
            "The tutorial script runs once per benchmark run (minutes, ~10 GB at full size), "
            "between two ingests (every sample_adata, the merge, all checks; fresh Dagster "
            "home and storage each). Peak RSS: the largest single process; for ingest also "
            "the main process's and the largest worker's (sampled every 0.2 s).",
            table,
        )
    )
    caption = "Where the ingest's wall time goes (from its run records; median of the ingests):"
    section.tables.append((caption, _phase_table(phases, wall)))
    section.tables.append(
        (
            "One sample: the asset's pieces timed outside Dagster, alone and as two processes "
            f"at once (`{first.name}`, `{second.name}`; medians of "
            f"{ctx.config.profile_reps} interleaved runs), against the ingest's Dagster steps "
            "and runs (medians over its samples, two at once).",
            _sample_table(alone, pair, phases, imports.result["import_s"], n),
        )
    )
    tut = tutorial.result
    section.notes.append(
        f"Tutorial script phases: read + QC {seconds(tut['read_s'])} s, concat "
        f"{seconds(tut['concat_s'])} s, write {seconds(tut['write_s'])} s."
    )
    section.checks += [
        Check(
            ">= 8x faster than the tutorial script (stretch 10x)",
            f"{ratio(speedup)} ({seconds(wall)} s vs {seconds(tutorial.wall_s)} s)",
            speedup >= 8,
        ),
        Check(
            "no process above 1.5 GB RSS",
            f"{megabytes(peak)} MB (main {megabytes(tree['main'])}, "
            f"largest worker {megabytes(tree['worker'])})",
            peak <= 1500,
        ),
        Check(
            f"uses both cores: partitions run concurrently (>= {0.9 * workers:.1f} of "
            f"{workers} runs at once in the sample phase)",
            f"{at_once:.2f} sample runs at once during the sample phase; {cores:.2f} cores busy "
            "on average over the whole ingest (start, reference pin and merge are one process)",
            at_once >= 0.9 * workers,
        ),
        Check(
            "float32 data, int32 indices (merged_adata.h5ad)",
            f"{dtypes['data']}, {dtypes['indices']}",
            dtypes == {"data": "float32", "indices": "int32"},
        ),
    ]
    section.raw = {
        "ingest_wall_s": wall,
        "ingest_peak_rss_mb": peak,
        "ingest_tree_peak_mb": tree,
        "ingest_cores_used": cores,
        "tutorial_wall_s": tutorial.wall_s,
        "tutorial_peak_rss_mb": tutorial.peak_rss_mb,
        "tutorial": tut,
        "speedup": speedup,
        "phases": {k: phases_median(phases, k) for k in phases[0]},
        "ingests": [
            {"wall_s": m.wall_s, "peak_rss_mb": m.peak_rss_mb, "tree_mb": m.tree_mb}
            for m in ingests
        ],
        "profile": alone,
        "profile_pair": pair,
        "import_definitions_s": imports.result["import_s"],
        "merged_dtypes": dtypes,
    }
    return section


def phases_median(phases: list[dict[str, float]], key: str) -> float:
    """The median of one phase over the ingests (NaN if no ingest has it)."""
    return median([p[key] for p in phases if key in p])


def _tutorial_series(ctx: Context, section: Section, data_dir: Path) -> Measurement:
    out = ctx.work / "tutorial.h5ad"
    command = [PYTHON, "-m", "benchmarks.tutorial", "series", str(data_dir), str(out)]
    measurement = ctx.measure(section, "tutorial-series", command)
    out.unlink()
    return measurement


def _matrix_dtypes(path: Path) -> dict[str, str]:
    with h5py.File(path, "r") as f:
        return {"data": str(f["X/data"].dtype), "indices": str(f["X/indices"].dtype)}


def _phase_table(phases: list[dict[str, float]], wall: float) -> Table:
    rows = [
        ("main process start: imports, partitions", "parent_start_s"),
        ("pin reference_genes (one run)", "reference_s"),
        ("worker processes start (spawn, imports)", "workers_start_s"),
        ("sample runs (both workers busy)", "samples_s"),
        ("pool shutdown, merge run start", "to_merge_s"),
        ("merge run (merge_h5ad + checks)", "merge_s"),
        ("report, exit", "exit_s"),
    ]
    table = Table(["phase", "s", "share"])
    for label, key in rows:
        value = median([p[key] for p in phases])
        table.rows.append([label, seconds(value), f"{value / wall:.0%}"])
    table.rows.append(["total (process wall)", seconds(wall), "100%"])
    return table


#: The pieces of the sample_adata asset, as the ``profile`` item times them.
PIECES = (
    ("parse (parse_count_matrix, QC sums and counts copy included)", "parse_s"),
    ("AnnData + QC metrics", "qc_s"),
    ("checks (sample_outcomes)", "checks_s"),
    ("QC plot + summary", "plot_s"),
    ("write .h5ad", "write_s"),
)


def _sample_table(
    alone: dict[str, float],
    pair: dict[str, float],
    phases: list[dict[str, float]],
    imp: float,
    n_samples: int,
) -> Table:
    """The pieces of one sample against the ingest's runs, per sample (a run is a batch)."""
    table = Table(["piece", "alone s", "two at once s"])
    for label, key in PIECES:
        table.rows.append([label, seconds(alone[key]), seconds(pair[key])])
    total_alone = sum(alone[key] for _, key in PIECES)
    total_pair = sum(pair[key] for _, key in PIECES)
    per_run = n_samples / phases_median(phases, "runs")
    step = phases_median(phases, "sample_step_s") / per_run
    run_s = phases_median(phases, "sample_run_s") / per_run
    first = phases_median(phases, "first_run_s") / per_run
    table.rows += [
        ["sum of the pieces", seconds(total_alone), seconds(total_pair)],
        [f"Dagster step per sample (runs of ~{per_run:.1f} samples)", "", seconds(step)],
        ["step minus pieces: staged write, events, metadata", "", seconds(step - total_pair)],
        ["Dagster run per sample", "", seconds(run_s)],
        ["run minus step: run start/end, resources", "", seconds(run_s - step)],
        ["a worker's first run, per sample (first-use imports)", "", seconds(first)],
        [
            "a worker's later runs, per sample",
            "",
            seconds(phases_median(phases, "later_run_s") / per_run),
        ],
        ["import of the code location (once per worker)", seconds(imp), ""],
    ]
    return table


# -------------------------------------------------------------------------------------------
# Merge
# -------------------------------------------------------------------------------------------


def merge(ctx: Context) -> Section:
    """merged_adata out of core: merge_h5ad vs concat_on_disk at growing sample counts."""
    assert ctx.storage is not None, "the end-to-end section provides the per-sample files"
    section = Section("merge", "Merge: merge_h5ad vs anndata concat_on_disk")
    sources = _sample_files(ctx.storage)
    out = ctx.work / "merged.h5ad"
    ms: dict[tuple[str, int], list[Measurement]] = {}
    # Unmeasured: every input into the page cache, so that no method pays the cold reads.
    run(_items("merge", out, "none", *_pairs(sources)))
    out.unlink()
    ctx.settle()
    for _ in range(ctx.config.merge_reps):
        for n in ctx.config.merge_sizes:
            pairs = _pairs(sources[:n])
            for method, command in (
                ("merge_h5ad", _items("merge", out, "none", *pairs)),
                ("concat_on_disk", _items("concat-on-disk", out, *pairs)),
            ):
                # Each run starts with no dirty pages to write back: gigabytes of output
                # otherwise throttle whichever run comes next.
                os.sync()
                ms.setdefault((method, n), []).append(ctx.measure(section, method, command))
                out.unlink()
    table = Table(
        [
            "samples", "cells", "merge_h5ad wall s", "peak MB", "output MB",
            "concat_on_disk wall s", "peak MB", "output MB", "wall ratio",
        ]
    )  # fmt: skip
    peaks, slower = [], []
    for n in ctx.config.merge_sizes:
        ours, theirs = ms[("merge_h5ad", n)], ms[("concat_on_disk", n)]
        peak = _stat(ours, "peak_rss_mb")
        peaks.append(peak)
        if _stat(ours, "wall_s") > _stat(theirs, "wall_s"):
            slower.append(f"{n} samples: {ratio(_stat(ours, 'wall_s') / _stat(theirs, 'wall_s'))}")
        table.rows.append(
            [
                str(n),
                f"{int(ours[0].result['n_obs']):,}",
                seconds(_stat(ours, "wall_s")),
                megabytes(peak),
                megabytes(_stat(ours, "bytes") / 1e6),
                seconds(_stat(theirs, "wall_s")),
                megabytes(_stat(theirs, "peak_rss_mb")),
                megabytes(_stat(theirs, "bytes") / 1e6),
                ratio(_stat(ours, "wall_s") / _stat(theirs, "wall_s")),
            ]
        )
    section.tables.append(
        (
            "Per-sample files of the ingest (X, and layers['counts'] as a hard link to it; "
            f"uncompressed, in the page cache), {ctx.config.merge_reps} interleaved runs each; "
            "wall ratio = merge_h5ad / concat_on_disk.",
            table,
        )
    )
    spread = max(peaks) / min(peaks) - 1
    section.checks += [
        Check(
            "merged peak RSS <= 500 MB", f"{megabytes(max(peaks))} MB at most", max(peaks) <= 500
        ),
        Check(
            f"flat in the number of samples ({'/'.join(map(str, ctx.config.merge_sizes))} "
            "within 10%)",
            f"{spread:.1%} between the smallest and largest peak",
            spread <= 0.10,
        ),
        Check(
            "wall time no worse than concat_on_disk",
            "not slower at any size" if not slower else "slower at " + ", ".join(slower),
            not slower,
        ),
    ]
    section.raw = {
        f"{method}_{n}": {
            "wall_s": _stat(m, "wall_s"),
            "peak_rss_mb": _stat(m, "peak_rss_mb"),
            "bytes": _stat(m, "bytes"),
            "runs": [{"wall_s": x.wall_s, "peak_rss_mb": x.peak_rss_mb} for x in m],
        }
        for (method, n), m in ms.items()
    }
    section.raw["peak_spread"] = spread
    return section


# -------------------------------------------------------------------------------------------
# Compression
# -------------------------------------------------------------------------------------------


def compression(ctx: Context) -> Section:
    """The HDF5 compression setting: write/read time and size per sample, and the merge."""
    assert ctx.storage is not None, "the end-to-end section provides the per-sample files"
    section = Section("compression", "Storage: SC_ASSETS_H5AD_COMPRESSION none / lzf / gzip")
    sources = _sample_files(ctx.storage)
    one = ctx.work / "one.h5ad"
    writes: dict[str, list[Measurement]] = {c: [] for c in COMPRESSIONS}
    ctx.settle()
    for _ in range(ctx.config.compression_reps):
        for c in COMPRESSIONS:
            command = _items("write-h5ad", sources[0][1], one, c)
            writes[c].append(ctx.measure(section, f"write-{c}", command))
            one.unlink()
    merges: dict[str, Measurement] = {}
    out = ctx.work / "merged.h5ad"
    for c in COMPRESSIONS:
        inputs = sources
        if c != "none":  # the inputs of a compressed merge are compressed too
            folder = ctx.work / f"inputs-{c}"
            run(_items("convert", c, folder, *(path for _, path in sources)))
            inputs = [(label, folder / path.name) for label, path in sources]
        os.sync()  # as in the merge section
        merges[c] = ctx.measure(section, f"merge-{c}", _items("merge", out, c, *_pairs(inputs)))
        out.unlink()
        if c != "none":
            shutil.rmtree(ctx.work / f"inputs-{c}")
    table = Table(
        [
            "setting", "sample write s", "sample read s", "sample MB", "merge s", "merge MB",
            "merge peak MB",
        ]
    )  # fmt: skip
    numbers: dict[str, dict[str, float]] = {}
    for c in COMPRESSIONS:
        numbers[c] = {
            "write_s": _stat(writes[c], "write_s"),
            "read_s": _stat(writes[c], "read_s"),
            "sample_mb": _stat(writes[c], "bytes") / 1e6,
            "merge_s": merges[c].result["call_s"],
            "merge_mb": merges[c].result["bytes"] / 1e6,
            "merge_peak_mb": merges[c].peak_rss_mb,
        }
        x = numbers[c]
        table.rows.append(
            [c, seconds(x["write_s"]), seconds(x["read_s"]), megabytes(x["sample_mb"]),
             seconds(x["merge_s"]), megabytes(x["merge_mb"]), megabytes(x["merge_peak_mb"])]
        )  # fmt: skip
    n = len(sources)
    section.tables.append(
        (
            f"Sample `{sources[0][1].name}` written with `write_h5ad(compression=...)` "
            f"({ctx.config.compression_reps} interleaved runs, medians; read = `read_h5ad` of "
            f"the file just written, from the page cache); merge of all {n} samples "
            "(inputs and output with the setting, one run each).",
            table,
        )
    )
    best, note = _recommendation(numbers, n)
    section.notes += [
        note,
        "merge_h5ad puts HDF5's shuffle filter before lzf/gzip, `write_h5ad` does not: hence "
        "the merged file compresses better than the per-sample files.",
    ]
    dtypes = _matrix_dtypes(sources[0][1])
    section.checks += [
        Check(
            "per-sample files: float32 data, int32 indices",
            f"{dtypes['data']}, {dtypes['indices']}",
            dtypes == {"data": "float32", "indices": "int32"},
        ),
        Check(
            f"the documented default ({DOCUMENTED_COMPRESSION}) is the measured best",
            f"measured best: {best}",
            best == DOCUMENTED_COMPRESSION,
        ),
    ]
    section.raw = {**numbers, "recommended": best}
    return section


def _recommendation(numbers: dict[str, dict[str, float]], n_samples: int) -> tuple[str, str]:
    """The setting to default to, and why: the smallest one costing at most 10% more time."""
    cost = {c: n_samples * x["write_s"] + x["merge_s"] for c, x in numbers.items()}
    size = {c: n_samples * x["sample_mb"] + x["merge_mb"] for c, x in numbers.items()}
    affordable = [c for c in COMPRESSIONS if cost[c] <= 1.10 * min(cost.values())]
    best = min(affordable, key=size.__getitem__)
    parts = [
        f"{c}: {1 - size[c] / size['none']:.0%} smaller, {cost[c] / cost['none']:.2f}x the "
        "write + merge time"
        for c in COMPRESSIONS
        if c != "none"
    ]
    return best, (
        f"Storage of {n_samples} per-sample files + the merged file, vs none: "
        + "; ".join(parts)
        + f". Measured best default: **{best}** (the smallest setting within 10% of the "
        "fastest write + merge time). gzip pays off where storage or transfer costs more "
        "than CPU (archives, object stores)."
    )


# -------------------------------------------------------------------------------------------
# Sensor tick
# -------------------------------------------------------------------------------------------


def sensor(ctx: Context) -> Section:
    """new_samples_sensor over a folder of many small files: first and steady-state ticks."""
    section = Section(
        "sensor", f"Sensor: new_samples_sensor over {ctx.config.sensor_files:,} files"
    )
    folder = ctx.work / "sensor"
    ctx.settle()
    command = [PYTHON, "-m", "benchmarks.sensor_tick", str(folder), str(ctx.config.sensor_files)]
    m = ctx.measure(section, "sensor", command)
    shutil.rmtree(folder)
    r = m.result
    assert m.log is not None
    with m.log.open(errors="replace") as log:
        lines = log.readlines()
    waiting = sum("is still being written" in line for line in lines)
    deferred = sum("more files wait for the next ticks" in line for line in lines)
    table = Table(["tick", "sensor evaluation s", "note"])
    table.rows += [
        ["first (every file new)", seconds(r["first_tick_s"]),
         f"scan + cursor, {r['first_samples']} files hashed and requested "
         f"(MAX_FILES_PER_TICK) in {r['first_runs']} runs; "
         f"applying its result (partitions, observations) took {seconds(r['first_apply_s'])} s"],
        ["draining (the rest, 100 per tick)", seconds(r["draining_tick_median_s"]),
         f"median of {r['draining_ticks']} ticks"],
        ["steady state (nothing changed)", seconds(r["steady_tick_median_s"]),
         f"median of the last ticks; cursor {r['cursor_bytes']} bytes"],
    ]  # fmt: skip
    section.tables.append(
        (
            "Persistent SQLite instance, reference_genes pretended pinned, one process "
            f"(peak RSS {megabytes(m.peak_rss_mb)} MB); times exclude writing the files.",
            table,
        )
    )
    ticks = [r["first_tick_s"], r["draining_tick_median_s"], r["steady_tick_median_s"]]
    section.checks.append(
        Check(
            f"a tick over {ctx.config.sensor_files:,} files under 2 s",
            f"first {seconds(r['first_tick_s'])} s, steady {seconds(r['steady_tick_median_s'])} s",
            all(t < 2 for t in ticks if not math.isnan(t)),
        )
    )
    section.notes.append(
        f"Over the {r['draining_ticks'] + 1} ticks that released files the sensor logged "
        f"{deferred:,} 'more files wait for the next ticks' lines (one count per tick for the "
        f"files held back by MAX_FILES_PER_TICK) and {waiting:,} 'is still being written' "
        "lines (none expected: every file was complete before the first tick)."
    )
    section.raw = {**r, "waiting_log_lines": waiting, "deferred_log_lines": deferred}
    return section
