"""The baseline: the tutorial's recipe, per sample and for a whole series.

Per sample it reads the CSV with pandas, transposes the dense frame into a CSR matrix (int64,
as pandas parsed it), builds the AnnData, flags ``MT-`` genes, computes scanpy's QC metrics and
keeps the raw counts in ``layers["counts"]``; the series script then concatenates all samples
with ``label="sample"`` and writes one ``.h5ad``.

One deviation from the tutorial: ``var_names_make_unique()``. The reference lists ten symbols
twice (``TBCE``...), and the tutorial's own recipe stops in ``anndata.concat`` (the inner join
on genes cannot align duplicated names); making them unique is what every user ends up adding.

Run as ``python -m benchmarks.tutorial sample PATH`` or ``... series DATA_DIR OUT``; it prints
its inner timings as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from sc_assets.core.names import parse_sample_name


def tutorial_sample(path: Path) -> ad.AnnData:
    """One sample, the tutorial's way."""
    df = pd.read_csv(path, index_col=0)
    adata = ad.AnnData(
        X=sp.csr_matrix(df.T.values),
        obs=pd.DataFrame(index=df.columns),
        var=pd.DataFrame(index=df.index),
    )
    del df
    adata.var_names_make_unique()
    adata.var["mt"] = adata.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    adata.layers["counts"] = adata.X.copy()
    return adata


def tutorial_series(data_dir: Path, out: Path) -> dict[str, float]:
    """Every sample of ``data_dir``, concatenated and written to ``out``; phase timings."""
    t0 = time.perf_counter()
    adatas = {}
    for path in sorted(data_dir.glob("*_count_matrix.csv.gz")):
        adatas[parse_sample_name(path).sample] = tutorial_sample(path)
    t1 = time.perf_counter()
    merged = ad.concat(adatas, label="sample", index_unique="-")
    t2 = time.perf_counter()
    merged.write_h5ad(out)
    t3 = time.perf_counter()
    return {
        "read_s": t1 - t0,
        "concat_s": t2 - t1,
        "write_s": t3 - t2,
        "bytes": out.stat().st_size,
        "n_obs": merged.n_obs,
        "data_dtype": str(merged.X.dtype),
    }


def main() -> None:
    """Command line of the measured processes (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tutorial")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("sample").add_argument("path", type=Path)
    series = commands.add_parser("series")
    series.add_argument("data_dir", type=Path)
    series.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "sample":
        t0 = time.perf_counter()
        adata = tutorial_sample(args.path)
        result = {"call_s": time.perf_counter() - t0, "nnz": adata.X.nnz}
    else:
        result = tutorial_series(args.data_dir, args.out)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
