"""The measured processes: ``python -m benchmarks.items ITEM ARGS...``.

Each item does one thing and prints its inner timings (after its imports) as one JSON line;
the parent (:mod:`benchmarks.measure`) measures the process as a whole. Imports are inside
the items so that each process pays exactly the imports of what it measures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _labelled(pairs: list[str]) -> list[tuple[str, Path]]:
    """``LABEL=PATH`` arguments as (label, path) pairs."""
    return [(label, Path(path)) for label, path in (pair.split("=", 1) for pair in pairs)]


def isal_decompress(path: Path) -> dict[str, Any]:
    """Decompress with python-isal to nothing: the floor of any reader of the file."""
    from isal import igzip

    t0 = time.perf_counter()
    n = 0
    with igzip.open(path, "rb") as f:
        while block := f.read(1 << 21):
            n += len(block)
    return {"call_s": time.perf_counter() - t0, "bytes": n}


def read(path: Path) -> dict[str, Any]:
    """``read_count_matrix``: parse, AnnData, QC metrics, counts layer.

    Its compiled code is loaded before the call (``warm_up``, timed apart as ``load_s``), as
    an ingest worker does when it starts: the call's time is the work, as in the tutorial
    item, whose imports load pandas' compiled parser.
    """
    return _loaded_call("sc_assets.core.readers", "read_count_matrix", path)


def parse(path: Path) -> dict[str, Any]:
    """``parse_count_matrix`` alone: the CSV to CSR, without AnnData and QC (code loaded first)."""
    return _loaded_call("sc_assets.core._csv_parser", "parse_count_matrix", path)


def _loaded_call(module: str, function: str, path: Path) -> dict[str, Any]:
    """Import ``module``, load the parser's compiled code, then time ``function(path)``."""
    t0 = time.perf_counter()
    call = getattr(importlib.import_module(module), function)
    from sc_assets.core._csv_parser import warm_up

    t1 = time.perf_counter()
    warm_up()
    t2 = time.perf_counter()
    result = call(path)
    return {
        "import_s": t1 - t0,
        "load_s": t2 - t1,
        "call_s": time.perf_counter() - t2,
        "nnz": int(result.X.nnz),
    }


def read_twice(path: Path) -> dict[str, Any]:
    """``read_count_matrix`` twice in one process: the first call and a warm one.

    No ``warm_up``: the first call of a process pays a one-off cost on top of the work: numba
    loads the parser's machine code from its cache. The second call has it loaded, as an
    ingest worker has from its second sample on. Both calls map fresh pages for their arrays
    (~300 MB, on 4 KB pages: see ``_small_pages`` in the parser): glibc hands blocks this large
    back to the kernel when they are freed. User and kernel CPU times and page faults come
    from ``getrusage`` (this process, all threads).
    """
    import resource

    from sc_assets.core.readers import read_count_matrix

    result: dict[str, Any] = {}
    for call in ("first", "second"):
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        adata = read_count_matrix(path)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_SELF)
        result |= {
            f"{call}_s": wall,
            f"{call}_user_s": after.ru_utime - before.ru_utime,
            f"{call}_kernel_s": after.ru_stime - before.ru_stime,
            f"{call}_page_faults": after.ru_minflt - before.ru_minflt,
        }
        del adata
    return result


def profile(path: Path, out: Path) -> dict[str, Any]:
    """The body of the ``sample_adata`` asset, piece by piece, outside Dagster."""
    t0 = time.perf_counter()
    from sc_assets.core.plots import qc_plot_png
    from sc_assets.core.qc import adata_summary
    from sc_assets.core.readers import ReadOptions, detect_layout, text
    from sc_assets.core.readers._contract import counts_adata
    from sc_assets.core.samples import geo_spec
    from sc_assets.core.validation import sample_outcomes

    text.warm_up()  # as the ingest workers do when they start
    times = {"import_s": time.perf_counter() - t0}

    def timed(name: str, step: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = step()
        times[name] = time.perf_counter() - start
        return value

    source = detect_layout(path)
    parsed = timed("parse_s", lambda: text.read(source, ReadOptions()))
    adata = timed("qc_s", lambda: counts_adata(parsed, geo_spec(path)))
    # The pinned reference is the first sample's gene list: the same list as here.
    timed("checks_s", lambda: sample_outcomes(adata, list(adata.var_names)))
    timed("plot_s", lambda: (qc_plot_png(adata), adata_summary(adata)))
    timed("write_s", lambda: adata.write_h5ad(out))
    times["bytes"] = out.stat().st_size
    return times


def profile_pair(first: Path, second: Path, out_dir: Path) -> dict[str, Any]:
    """:func:`profile` in two processes at once, as the ingest's two workers run samples."""
    commands = [
        [sys.executable, "-m", "benchmarks.items", "profile", str(path), str(out_dir / name)]
        for path, name in ((first, "pair-0.h5ad"), (second, "pair-1.h5ad"))
    ]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE) for command in commands]
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"profile exited {proc.returncode}")
        results.append(json.loads(out.splitlines()[-1]))
    for name in ("pair-0.h5ad", "pair-1.h5ad"):
        (out_dir / name).unlink()
    return {key: statistics.mean(r[key] for r in results) for key in results[0]}


def merge(out: Path, compression: str, pairs: list[str]) -> dict[str, Any]:
    """``merge_h5ad`` over ``LABEL=PATH`` sources."""
    from sc_assets.core.merge import merge_h5ad

    t0 = time.perf_counter()
    summary = merge_h5ad(
        _labelled(pairs), out, compression=None if compression == "none" else compression
    )
    return {"call_s": time.perf_counter() - t0, "n_obs": summary.n_obs, "bytes": _size(out)}


def concat_on_disk(out: Path, pairs: list[str]) -> dict[str, Any]:
    """``anndata.experimental.concat_on_disk`` over the same sources (X and every layer)."""
    from anndata.experimental import concat_on_disk as concat

    sources = _labelled(pairs)
    t0 = time.perf_counter()
    concat(
        {label: path for label, path in sources},
        out,
        join="inner",
        merge="same",
        label="sample",
    )
    return {"call_s": time.perf_counter() - t0, "bytes": _size(out)}


def write_h5ad(source: Path, out: Path, compression: str) -> dict[str, Any]:
    """Write one sample with an HDF5 compression as the IO manager does, then read it back."""
    import anndata as ad

    from sc_assets.core.h5ad import write_h5ad as write

    adata = ad.read_h5ad(source)
    t0 = time.perf_counter()
    write(adata, out, compression=None if compression == "none" else compression)
    t1 = time.perf_counter()
    ad.read_h5ad(out)
    return {"write_s": t1 - t0, "read_s": time.perf_counter() - t1, "bytes": _size(out)}


def convert(compression: str, out_dir: Path, sources: list[Path]) -> dict[str, Any]:
    """Rewrite per-sample files with a compression (the inputs of a compressed merge)."""
    import anndata as ad

    from sc_assets.core.h5ad import write_h5ad as write

    out_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        write(ad.read_h5ad(source), out_dir / source.name, compression=compression)
    return {"files": len(sources)}


def import_definitions() -> dict[str, Any]:
    """Import the code location, as each ingest worker does before its first run."""
    t0 = time.perf_counter()
    import sc_assets.definitions  # noqa: F401

    return {"import_s": time.perf_counter() - t0}


def runs(home: Path) -> dict[str, Any]:
    """Start, end and step time of every run recorded in the instance at ``home``."""
    from dagster import DagsterInstance

    records = []
    with DagsterInstance.from_config(str(home)) as instance:
        for record in instance.get_run_records(ascending=True):
            run = record.dagster_run
            steps = instance.get_run_step_stats(run.run_id)
            records.append(
                {
                    "job": run.job_name,
                    "partition": run.tags.get("dagster/partition"),
                    "status": run.status.value,
                    "start": record.start_time,
                    "end": record.end_time,
                    "step_s": sum(
                        s.end_time - s.start_time for s in steps if s.start_time and s.end_time
                    ),
                }
            )
    return {"runs": records}


def _size(path: Path) -> int:
    return path.stat().st_size


def main() -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.items")
    commands = parser.add_subparsers(dest="item", required=True)
    for name in ("isal", "read", "read-twice", "parse"):
        commands.add_parser(name).add_argument("path", type=Path)
    commands.add_parser("import-definitions")
    commands.add_parser("runs").add_argument("home", type=Path)
    p = commands.add_parser("profile")
    p.add_argument("path", type=Path)
    p.add_argument("out", type=Path)
    p = commands.add_parser("profile-pair")
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.add_argument("out_dir", type=Path)
    p = commands.add_parser("merge")
    p.add_argument("out", type=Path)
    p.add_argument("compression", choices=("none", "lzf", "gzip"))
    p.add_argument("pairs", nargs="+", metavar="LABEL=PATH")
    p = commands.add_parser("concat-on-disk")
    p.add_argument("out", type=Path)
    p.add_argument("pairs", nargs="+", metavar="LABEL=PATH")
    p = commands.add_parser("write-h5ad")
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("compression", choices=("none", "lzf", "gzip"))
    p = commands.add_parser("convert")
    p.add_argument("compression", choices=("lzf", "gzip"))
    p.add_argument("out_dir", type=Path)
    p.add_argument("sources", nargs="+", type=Path)
    args = parser.parse_args()
    items: dict[str, Callable[[], dict[str, Any]]] = {
        "isal": lambda: isal_decompress(args.path),
        "read": lambda: read(args.path),
        "read-twice": lambda: read_twice(args.path),
        "parse": lambda: parse(args.path),
        "profile": lambda: profile(args.path, args.out),
        "profile-pair": lambda: profile_pair(args.first, args.second, args.out_dir),
        "merge": lambda: merge(args.out, args.compression, args.pairs),
        "concat-on-disk": lambda: concat_on_disk(args.out, args.pairs),
        "write-h5ad": lambda: write_h5ad(args.source, args.out, args.compression),
        "convert": lambda: convert(args.compression, args.out_dir, args.sources),
        "import-definitions": import_definitions,
        "runs": lambda: runs(args.home),
    }
    print(json.dumps(items[args.item]()))


if __name__ == "__main__":
    main()
