"""``python -m benchmarks [--smoke] [--out DIR]``: every section, then BENCHMARKS.md.

The full run generates the full-size demo series once (cached in ``benchmarks/.cache/``),
measures every section (tens of minutes, several GB of temporary files, removed at the end)
and replaces ``BENCHMARKS.md``. ``--smoke`` runs the same code on a tiny series in ``--out``
(default: a new temporary folder) and never touches ``BENCHMARKS.md`` or the cache.
Both write ``results.json`` (the raw numbers of every section) and ``BENCHMARKS.md`` into
``--out`` when it is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import cluster, incremental, layouts, many_samples, registered, sections
from benchmarks.report import Section, machine, markdown_document, ratio, seconds
from benchmarks.sections import FULL, SMOKE, Context
from benchmarks.series import CACHE_DIR, ensure_series

PROJECT_DIR = Path(__file__).resolve().parent.parent

#: In order: the merge and compression sections reuse the end-to-end section's files.
SECTIONS: tuple[Callable[[Context], Section], ...] = (
    sections.one_sample,
    sections.end_to_end,
    sections.merge,
    incremental.section,
    sections.compression,
    sections.sensor,
    layouts.section,
    many_samples.section,
    registered.section,
    cluster.section,
)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run each (CI)")
    parser.add_argument("--out", type=Path, help="folder for BENCHMARKS.md and results.json")
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else FULL
    out = args.out or (Path(tempfile.mkdtemp(prefix="sc-assets-bench-")) if args.smoke else None)
    report_path = out / "BENCHMARKS.md" if out else PROJECT_DIR / "BENCHMARKS.md"
    results_path = out / "results.json" if out else CACHE_DIR / "results.json"
    base = out or CACHE_DIR
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=base))

    command = "python -m benchmarks" + (" --smoke" if args.smoke else "")
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    start_load, t0 = os.getloadavg(), time.perf_counter()
    print(f"{command}: {date}, load average {start_load[0]:.2f}; scratch {work}", flush=True)
    done: list[Section] = []
    try:
        # The smoke series is generated in the scratch folder, never in the cache.
        series = ensure_series(
            work if config.smoke else CACHE_DIR, scale=config.scale, samples=config.samples
        )
        ctx = Context(config=config, series=series, work=work)
        for section in SECTIONS:
            started = time.perf_counter()
            result = section(ctx)
            result.duration_s = time.perf_counter() - started
            done.append(result)
            print(result.text() + "\n", flush=True)
    except BaseException:
        # Keep the logs of the measured processes for the post-mortem, drop the big files.
        for child in work.iterdir():
            if child.name != "logs":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        print(f"benchmarks failed; the logs are in {work / 'logs'}", file=sys.stderr)
        raise
    shutil.rmtree(work)

    summary = where_the_time_goes({s.key: s.raw for s in done}, len(series))
    print("== Where the time goes ==\n" + summary)
    document = markdown_document(
        command=command,
        date=date,
        duration_s=time.perf_counter() - t0,
        machine_info=machine(),
        loads=(start_load, os.getloadavg()),
        summary=summary,
        sections=done,
    )
    report_path.write_text(document)
    results = {
        s.key: {"raw": s.raw, "checks": [c.__dict__ for c in s.checks], "notes": s.notes}
        for s in done
    }
    results_path.write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {report_path} and {results_path}")
    return 0


def where_the_time_goes(raw: dict[str, dict], n_samples: int) -> str:
    """The paragraph of BENCHMARKS.md that explains the numbers."""
    one, e2e, merge = raw["one_sample"], raw["end_to_end"], raw["merge"]
    call, phases = one["call_s"], e2e["phases"]
    alone, pair = e2e["profile"], e2e["profile_pair"]
    read, parse, isal = call[sections.READ], call[sections.PARSE], call[sections.ISAL]
    twice = one["read_twice"]
    alone_s = sum(alone[key] for _, key in sections.PIECES)
    pair_s = sum(pair[key] for _, key in sections.PIECES)
    largest = max(int(key.rsplit("_", 1)[1]) for key in merge if key[-1].isdigit())
    merged, tree = merge[f"merge_h5ad_{largest}"], e2e["ingest_tree_peak_mb"]
    serial = e2e["ingest_wall_s"] - phases["samples_s"]
    per_run = n_samples / phases.get("runs", n_samples)
    per_sample = phases["sample_run_s"] / per_run
    return (
        f"**One sample.** `read_count_matrix` takes {seconds(read)} s in the call, "
        f"{ratio(read / isal)} of isal decompression alone ({seconds(isal)} s): the parse "
        f"{seconds(parse)} s ({ratio(parse / isal)} of decompression: the file is inflated "
        "in a background thread while numba parses the previous block, so the parse loop, "
        "not the decompression, sets the pace; it also takes the QC sums and bucket-sorts "
        "each count into CSR order as it goes), then the counts-layer copy, the AnnData and its"
        f" QC columns {seconds(read - parse)} s. Its process adds "
        f"{seconds(one['read_import_s'])} s of imports (anndata, numba) and "
        f"{seconds(one['read_load_s'])} s loading the parser's compiled code (`warm_up()`, as "
        "ingest workers do when they start) before the call. A call without `warm_up()`, "
        f"the first of its process, takes {seconds(twice['first_s'])} s; a second call in the"
        " same process "
        f"takes {seconds(twice['second_s'])} s ({ratio(twice['second_s'] / isal)} of "
        f"decompression): the first call's extra {seconds(twice['first_s'] - twice['second_s'])}"
        " s are one-off: numba loading the parser's cached machine code (both calls map fresh"
        f" pages for their arrays: kernel CPU {seconds(twice['first_kernel_s'])} s in the first"
        f" call, {seconds(twice['second_kernel_s'])} s in the second).\n\n"
        f"**End to end** ({seconds(e2e['ingest_wall_s'])} s for {n_samples} samples vs "
        f"{seconds(e2e['tutorial_wall_s'])} s for the tutorial script, "
        f"{ratio(e2e['speedup'])}): the sample runs take {seconds(phases['samples_s'])} s "
        f"on both cores; the remaining {seconds(serial)} s run on one core: the main "
        f"process's start {seconds(phases['parent_start_s'])} s, pinning reference_genes "
        f"{seconds(phases['reference_s'])} s, the workers' start (spawn, imports) "
        f"{seconds(phases['workers_start_s'])} s, the pool's shutdown before the merge "
        f"{seconds(phases['to_merge_s'])} s, the merge run {seconds(phases['merge_s'])} s "
        f"(merge step {seconds(phases['merge_step_s'])} s) and the exit "
        f"{seconds(phases['exit_s'])} s. The samples ran in {phases['runs']:.0f} runs (batches "
        f"of ~{per_run:.1f} samples); a run takes {seconds(phases['sample_run_s'])} s with two "
        f"at once, {seconds(per_sample)} s per sample. Outside Dagster a sample's pieces take "
        f"{seconds(alone_s)} s alone and "
        f"{seconds(pair_s)} s two at once (parse {seconds(pair['parse_s'])}, QC "
        f"{seconds(pair['qc_s'])}, checks {seconds(pair['checks_s'])}, plot "
        f"{seconds(pair['plot_s'])}, h5ad write {seconds(pair['write_s'])}): the two "
        "workers compete for the cores, and the parser of each wants both. The remaining "
        f"{seconds(per_sample - pair_s)} s per sample are Dagster's: the staged write and "
        "metadata, events and check results in SQLite, its share of the run's start and end. "
        "Memory: the largest ingest process was a "
        f"{'worker' if tree['worker'] >= tree['main'] else 'main process'} "
        f"({max(tree.values()):,.0f} MB; main {tree['main']:,.0f} MB, largest worker "
        f"{tree['worker']:,.0f} MB).\n\n"
        f"**Merge:** {largest} samples in {seconds(merged['wall_s'])} s at "
        f"{merged['peak_rss_mb']:,.0f} MB peak, streamed in fixed-size blocks. The per-sample"
        " files store `layers['counts']` as an HDF5 hard link to `X` (the same raw counts), "
        "and so does the merged file: half the bytes to write. concat_on_disk reads the layer "
        "as a second matrix and writes it again, hence its output twice the size."
        + _many_samples_summary(raw.get("many_samples", {}))
    )


def _many_samples_summary(many: dict[str, dict[str, float]]) -> str:
    """The paragraph on studies of many small samples (empty without that section)."""
    if not many:
        return ""
    parts = []
    for n, m in sorted(many.items(), key=lambda item: int(item[0])):
        parts.append(
            f"{n} samples in {seconds(m['ingest_s'])} s vs {seconds(m['tutorial_s'])} s for the "
            f"tutorial ({ratio(m['tutorial_s'] / m['ingest_s'])}; {m['runs']:.0f} sample runs: "
            f"start and pin {seconds(m['start_s'])} s, samples {seconds(m['samples_s'])} s, "
            f"merge {seconds(m['merge_s'])} s)"
        )
    return (
        "\n\n**Many small samples** (~135 cells each): "
        + "; ".join(parts)
        + ". A small sample parses in a few hundredths of a second: the rest is per-sample "
        "bookkeeping (its materialization and six check results, each an event written to "
        "SQLite; its file; its share of the merge), which batching samples into runs of a "
        "partition range shares out but does not remove."
    )


if __name__ == "__main__":
    sys.exit(main())
