"""Measured processes and the section for the readers of every layout, against scanpy's.

``python -m benchmarks.layouts ITEM LAYOUT PATH WARM_PATH`` reads ``PATH`` with our reader
(``ours``) or with scanpy's/anndata's reader for that layout (``theirs``) after reading the tiny
``WARM_PATH`` of the same layout once (both sides load their lazily imported and compiled
code there, as a long-running worker has), and prints its timings as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import PYTHON, Measurement, median
from benchmarks.report import Check, Section, Table, megabytes, ratio, seconds

#: Layout -> the reader of the field it is compared with.
REFERENCE_READERS = {
    "10x_h5": "scanpy.read_10x_h5",
    "10x_mtx": "scanpy.read_10x_mtx",
    "h5ad": "anndata.read_h5ad",
}


def write_layouts(folder: Path, *, scale: float) -> dict[str, tuple[Path, Path]]:
    """A demo sample at ``scale`` and a tiny one in each layout: layout -> (sample, tiny)."""
    from sc_assets.core.demo_layouts import demo_counts
    from sc_assets.core.tenx_writers import write_10x_h5, write_10x_mtx

    paths = {}
    for size, fraction in (("sample", scale), ("tiny", 0.005)):
        c = demo_counts(0, scale=fraction)
        base = folder / size
        base.mkdir(parents=True, exist_ok=True)
        h5, mtx, h5ad = base / "sample.h5", base / "filtered_feature_bc_matrix", base / "x.h5ad"
        write_10x_h5(h5, c.X, c.barcodes, c.gene_ids, c.genes)
        write_10x_mtx(mtx, c.X, c.barcodes, c.gene_ids, c.genes)
        _write_h5ad(h5ad, c)
        paths[size] = {"10x_h5": h5, "10x_mtx": mtx, "h5ad": h5ad}
    return {layout: (paths["sample"][layout], paths["tiny"][layout]) for layout in paths["tiny"]}


def _write_h5ad(path: Path, c) -> None:
    """As a collaborator's file often is: X and layers["counts"] the raw counts, float32."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    from sc_assets.core.genes import unique_gene_names

    X = c.X.astype(np.float32)
    var = pd.DataFrame({"gene_ids": c.gene_ids}, index=unique_gene_names(c.genes))
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=c.barcodes), var=var)
    adata.layers["counts"] = X.copy()
    adata.write_h5ad(path)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def read_item(which: str, layout: str, path: Path, warm: Path) -> dict[str, Any]:
    """Time one read; peak memory of the call = peak RSS after it minus RSS before it."""
    t0 = time.perf_counter()
    if which == "ours":
        from sc_assets.core.readers import read_count_matrix as read
    else:
        import anndata as ad
        import scanpy as sc

        read = {"10x_h5": sc.read_10x_h5, "10x_mtx": sc.read_10x_mtx, "h5ad": ad.read_h5ad}[layout]
    t1 = time.perf_counter()
    read(warm)
    t2 = time.perf_counter()
    before = _rss_mb()
    adata = read(path)
    call = time.perf_counter() - t2
    X = adata.X
    x_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    return {
        "import_s": t1 - t0,
        "load_s": t2 - t1,
        "call_s": call,
        "peak_call_mb": _peak_mb() - before,
        "x_mb": x_bytes / 1e6,
        "nnz": int(X.nnz),
        "n_obs": int(adata.n_obs),
        "n_vars": int(adata.n_vars),
        "layers": sorted(adata.layers),
    }


def section(ctx) -> Section:
    """Each reader against the reader of the field for its layout, interleaved."""
    section = Section("readers", "Readers: every layout against scanpy's and anndata's")
    paths = write_layouts(ctx.work / "layouts", scale=ctx.config.scale)
    reps = ctx.config.reader_reps
    ms: dict[tuple[str, str], list[Measurement]] = {}
    ctx.settle()
    for _ in range(reps):
        for layout, (path, warm) in paths.items():
            for which in ("ours", "theirs"):
                command = [PYTHON, "-m", "benchmarks.layouts", which, layout, str(path), str(warm)]
                measured = ctx.measure(section, f"{which}-{layout}", command)
                ms.setdefault((layout, which), []).append(measured)

    def stat(layout: str, which: str, key: str) -> float:
        return median([float(m.result[key]) for m in ms[(layout, which)]])

    table = Table(
        [
            "layout", "reader", "runs", "in-call s", "ours / theirs", "peak in call MB",
            "peak / X", "peak / (X + counts)", "whole process s",
        ]
    )  # fmt: skip
    raw: dict[str, Any] = {}
    for layout in paths:
        ours, theirs = stat(layout, "ours", "call_s"), stat(layout, "theirs", "call_s")
        x_mb = stat(layout, "ours", "x_mb")
        for which, name in (("ours", "read_count_matrix"), ("theirs", REFERENCE_READERS[layout])):
            peak = stat(layout, which, "peak_call_mb")
            table.rows.append(
                [
                    layout,
                    name,
                    str(len(ms[(layout, which)])),
                    seconds(stat(layout, which, "call_s")),
                    ratio(ours / theirs) if which == "ours" else "",
                    megabytes(peak),
                    ratio(peak / x_mb),
                    ratio(peak / (2 * x_mb)) if which == "ours" else "",
                    seconds(median([m.wall_s for m in ms[(layout, which)]])),
                ]
            )
        peak = stat(layout, "ours", "peak_call_mb")
        raw[layout] = {
            "ours_call_s": ours,
            "theirs_call_s": theirs,
            "ours_peak_call_mb": peak,
            "theirs_peak_call_mb": stat(layout, "theirs", "peak_call_mb"),
            "x_mb": x_mb,
            "ours_load_s": stat(layout, "ours", "load_s"),
        }
        section.checks += [
            Check(
                f"{layout}: at least as fast as {REFERENCE_READERS[layout]} (in-call)",
                f"{seconds(ours)} s vs {seconds(theirs)} s ({ratio(ours / theirs)})",
                ours <= theirs,
            ),
            Check(
                f"{layout}: peak memory of the call <= 2x the matrices returned (X and "
                'layers["counts"], two independent copies)',
                f"{megabytes(peak)} MB = {ratio(peak / (2 * x_mb))} of X + counts "
                f"({ratio(peak / x_mb)} of X alone, {megabytes(x_mb)} MB)",
                peak <= 2 * (2 * x_mb),
            ),
        ]
    nnz = int(stat("10x_h5", "ours", "nnz"))
    section.tables.append(
        (
            f"One demo sample ({int(stat('10x_h5', 'ours', 'n_obs')):,} cells x "
            f"{int(stat('10x_h5', 'ours', 'n_vars')):,} genes, {nnz:,} non-zeros) written as "
            "Cell Ranger 3 HDF5, a gzipped MTX v3 folder and an .h5ad (X and layers['counts'] "
            "the counts). in-call = the read alone, after the imports and after one read of a "
            "tiny file of the same layout (each side loads its lazily imported and compiled "
            "code there, as a worker has after its first sample). Peak in call = peak RSS "
            "after the read minus RSS before it. Our reader returns X and an independent "
            "layers['counts'] (and QC columns, validated counts); scanpy's and anndata's "
            "return what the file holds (anndata: both matrices from disk).",
            table,
        )
    )
    section.notes.append(
        "Counts are identical to the reference readers' (sc_assets_tests/core/readers/ "
        "asserts it on the real Cell Ranger files and on generated ones). The GEO CSV layout "
        "is measured against the tutorial's pandas recipe in the one-sample section."
    )
    section.raw = raw
    return section


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.layouts")
    parser.add_argument("which", choices=("ours", "theirs"))
    parser.add_argument("layout", choices=tuple(REFERENCE_READERS))
    parser.add_argument("path", type=Path)
    parser.add_argument("warm", type=Path)
    args = parser.parse_args()
    print(json.dumps(read_item(args.which, args.layout, args.path, args.warm)))


if __name__ == "__main__":
    sys.exit(main())
