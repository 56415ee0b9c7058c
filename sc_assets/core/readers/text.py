"""Text count matrices: GEO's gzipped genes x cells CSVs, and their TSV/uncompressed kin.

The fast path is the numba parser of :mod:`sc_assets.core._csv_parser`, which decodes and
parses on two cores and takes the QC sums on the way.
"""

from __future__ import annotations

from pathlib import Path

from sc_assets.core._csv_parser import parse_count_matrix, warm_up
from sc_assets.core._csv_text import read_gene_names as _read_gene_column
from sc_assets.core.qc import MT_PREFIX
from sc_assets.core.readers._contract import CountData, Features
from sc_assets.core.readers._source import GZIP_MAGIC, ReadOptions, Source

__all__ = ["LAYOUTS", "detect", "read", "read_gene_names", "warm_up"]

LAYOUTS = ("csv", "tsv")


def detect(path: Path, head: bytes) -> Source | None:
    """A gzipped CSV whose first line holds commas (the header of cell barcodes)."""
    if path.is_dir():
        return None
    with open(path, "rb") as f:
        if f.read(2) != GZIP_MAGIC:
            return None
    first = head.split(b"\n", 1)[0]
    if b"," not in first or b"\x00" in head:
        return None
    return Source("csv", path, {"matrix": path}, "a gzipped CSV count matrix")


def read(source: Source, options: ReadOptions) -> CountData:
    parsed = parse_count_matrix(source.path, flag_prefix=MT_PREFIX, with_copy=True)
    return CountData(
        path=source.path,
        layout=source.layout,
        barcodes=parsed.barcodes,
        features=Features(names=parsed.genes),
        X=parsed.X,
        X_copy=parsed.X_copy,
        sums=parsed.sums,
    )


def read_gene_names(source: Source, options: ReadOptions) -> list[str]:
    return _read_gene_column(source.path)
