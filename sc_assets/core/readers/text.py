"""Text count matrices: GEO's gzipped genes x cells CSVs, and their TSV/uncompressed kin.

Comma or tab separated (told apart by the header line), gzipped or not (told apart by the
gzip signature), genes x cells (a row per gene, GEO's layout) or cells x genes (a row per
barcode; ``ReadOptions.orientation``, from the samplesheet). The fast path is the numba parser
of :mod:`sc_assets.core._csv_parser`, which reads and parses on two cores and takes the QC sums
on the way, in both orientations. The parser is imported when a file is read: detecting a
layout, or reading the gene names, never loads numba.
"""

from __future__ import annotations

import gc
from pathlib import Path

from sc_assets.core._csv_text import detect_separator
from sc_assets.core._csv_text import read_gene_names as _read_gene_names
from sc_assets.core._decompress import looks_like_text
from sc_assets.core.qc import MT_PREFIX
from sc_assets.core.readers._contract import CountData, Features
from sc_assets.core.readers._source import ReadOptions, Source, is_gzip

__all__ = ["LAYOUTS", "detect", "read", "read_gene_names", "warm_up"]

LAYOUTS = ("csv", "tsv")

_BOM = b"\xef\xbb\xbf"
_LAYOUT_OF_SEPARATOR = {",": "csv", "\t": "tsv"}


def detect(path: Path, head: bytes) -> Source | None:
    """Text (gzipped or not) whose first line holds commas or tabs: the header of a matrix.

    The separator is the more frequent of the two on the first line (outside quotes), and is
    kept in ``Source.extra["sep"]``. Binary data, a gzip file that does not decompress and a
    Matrix Market file (``%%MatrixMarket``, which is text too) are not claimed.
    """
    if path.is_dir() or not looks_like_text(head):
        return None
    text = head.removeprefix(_BOM)
    if text.startswith(b"%%MatrixMarket"):
        return None
    sep = detect_separator(text.split(b"\n", 1)[0])
    if sep is None:
        return None
    layout = _LAYOUT_OF_SEPARATOR[sep]
    compressed = is_gzip(path)
    detail = f"{'a gzipped' if compressed else 'an uncompressed'} {layout.upper()} count matrix"
    return Source(layout, path, {"matrix": path}, detail, {"sep": sep, "gzip": compressed})


def read(source: Source, options: ReadOptions) -> CountData:
    """The counts of a text matrix, with the QC sums the parser takes on the way."""
    from sc_assets.core._csv_parser import parse_count_matrix

    parsed = parse_count_matrix(
        source.path,
        flag_prefix=MT_PREFIX,
        sep=_separator(source),
        orientation=options.orientation,
        with_copy=True,
    )
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
    """The gene symbols: the header's for ``cells_x_genes``, else the rows' first fields."""
    return _read_gene_names(source.path, _separator(source), options.orientation)


def warm_up() -> None:
    """Load the parser's compiled code now, not in the first read (``_csv_parser.warm_up``).

    The ingest workers call this when they start. Loading leaves thousands of objects for the
    garbage collector, whose next full collection (0.1 s) would otherwise fall in the first
    read: it is made here.
    """
    from sc_assets.core import _csv_parser

    _csv_parser.warm_up()
    gc.collect()


def _separator(source: Source) -> str:
    """The separator detection found, or the layout's (a Source made by hand)."""
    sep = source.extra.get("sep")
    if isinstance(sep, str):
        return sep
    return "\t" if source.layout == "tsv" else ","
