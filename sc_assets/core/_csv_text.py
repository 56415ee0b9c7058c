"""The text of a count matrix around the counts, in plain Python (no numba).

The separator (:func:`detect_separator`), the header row (:func:`parse_header`, shared with the
numba parser), the words messages use for each orientation (:class:`TextLayout`) and a reader
of the row names alone (:func:`read_gene_names`), for callers that need a sample's gene list
but not its counts, such as pinning the reference gene list.

Two orientations: ``genes_x_cells`` (GEO's CSVs: a header of cell barcodes, a row per gene)
and ``cells_x_genes`` (a header of gene symbols, a row per cell barcode); comma or tab
separated, gzipped or not.
"""

from __future__ import annotations

import csv
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from sc_assets.core._decompress import decompressed_blocks
from sc_assets.core.errors import CountMatrixError

_BOM = b"\xef\xbb\xbf"
_NL, _CR, _QUOTE = 10, 13, 34

GENES_X_CELLS = "genes_x_cells"
CELLS_X_GENES = "cells_x_genes"
ORIENTATIONS = (GENES_X_CELLS, CELLS_X_GENES)
SEPARATORS = {",": "comma", "\t": "tab"}


@dataclass(frozen=True)
class TextLayout:
    """How a count matrix is spelled as text: its separator and orientation, and their words."""

    sep: str = ","
    orientation: str = GENES_X_CELLS

    def __post_init__(self) -> None:
        if self.sep not in SEPARATORS:
            raise ValueError(f"the separator must be ',' or '\\t', got {self.sep!r}")
        if self.orientation not in ORIENTATIONS:
            expected = " or ".join(ORIENTATIONS)
            raise ValueError(f"unknown orientation {self.orientation!r}: expected {expected}")

    @property
    def sep_name(self) -> str:
        """``"comma"`` or ``"tab"``."""
        return SEPARATORS[self.sep]

    @property
    def rows_are_genes(self) -> bool:
        return self.orientation == GENES_X_CELLS

    @property
    def column_item(self) -> str:
        """What a header field after the corner names: ``"cell barcode"`` or ``"gene symbol"``."""
        return "cell barcode" if self.rows_are_genes else "gene symbol"

    @property
    def row_item(self) -> str:
        """What the first field of a row names: ``"gene name"`` or ``"barcode"``."""
        return "gene name" if self.rows_are_genes else "barcode"

    @property
    def row_kind(self) -> str:
        """``"gene"`` or ``"cell"``: a data row is a gene row or a cell row."""
        return "gene" if self.rows_are_genes else "cell"

    @property
    def column_kind(self) -> str:
        """``"cell"`` or ``"gene"``: what a header column is."""
        return "cell" if self.rows_are_genes else "gene"


#: GEO's layout: comma-separated, a row per gene.
GEO_LAYOUT = TextLayout()


def quote_text(text: str) -> str:
    """``text`` quoted for an error message, shortened to 40 characters."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


_NUMBER_RE = re.compile(r"[ \t]*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[ \t]*|[+-]?(nan|inf)", re.I)
_QUOTED_RE = re.compile(rb'"[^"\n]*"?')


def detect_separator(line: bytes) -> str | None:
    """The separator of a header line (or its start): ``","``, ``"\\t"``, or None if neither.

    Whichever of tab and comma occurs more often outside double quotes wins (a comma, on a
    tie), so a stray comma in a TSV name or a stray tab in a CSV barcode does not decide.
    """
    if b'"' in line:
        line = _QUOTED_RE.sub(b"", line)
    tabs, commas = line.count(b"\t"), line.count(b",")
    if tabs == commas == 0:
        return None
    return "\t" if tabs > commas else ","


def parse_header(
    path: str | os.PathLike[str], raw: bytes, layout: TextLayout = GEO_LAYOUT
) -> tuple[str, list[str]]:
    """The corner field and the column names of the header line ``raw`` (without its newline).

    The column names are the cell barcodes (``genes_x_cells``: unique, as ``read_csv`` needs)
    or the gene symbols (``cells_x_genes``: repeats allowed, as in 10x references).
    """
    raw = raw.removeprefix(_BOM).removesuffix(b"\r")
    item = layout.column_item
    if not raw:
        problem = f"the first line is empty: expected the header row of {item}s"
        raise CountMatrixError(path, problem, line=1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = (
            f"the header row is not UTF-8 text (byte {exc.start + 1}); is this a "
            f"{'CSV' if layout.sep == ',' else 'TSV'} file?"
        )
        raise CountMatrixError(path, problem, line=1) from None
    try:
        fields = next(csv.reader([text], delimiter=layout.sep, strict=True))
    except csv.Error as exc:
        problem = f"the header row has a badly quoted field ({exc})"
        raise CountMatrixError(path, problem, line=1) from None
    corner, names = fields[0], fields[1:]
    if not names:
        problem = (
            f"the header row has no {item}s: expected a corner field, then one {item} per "
            f"{layout.column_kind}, separated by {layout.sep_name}s"
        )
        raise CountMatrixError(path, problem, line=1)
    if all(_NUMBER_RE.fullmatch(b) for b in names):
        problem = (
            f"the first line looks like a {layout.row_kind} row, not a header: all {len(names)}"
            f" fields after the first are numbers; the file must start with a header row of"
            f" {item}s"
        )
        raise CountMatrixError(path, problem, line=1)
    if names[-1] == "":
        problem = f"the header row ends with a {layout.sep_name} (an empty last field)"
        raise CountMatrixError(path, problem, line=1, column=len(fields))
    if not layout.rows_are_genes:
        if "" in names:
            column = names.index("") + 2
            problem = "the gene symbol is empty: every column needs a gene symbol"
            raise CountMatrixError(path, problem, line=1, column=column)
        return corner, names
    seen: dict[str, int] = {}
    for column, barcode in enumerate(names, start=2):
        if barcode == "":
            problem = "the cell barcode is empty: every column needs a barcode"
            raise CountMatrixError(path, problem, line=1, column=column)
        first = seen.setdefault(barcode, column)
        if first != column:
            problem = (
                f"cell barcode {quote_text(barcode)} appears twice in the header, in columns"
                f" {first} and {column}: barcodes must be unique"
            )
            raise CountMatrixError(path, problem, line=1, column=column)
    return corner, names


def read_gene_names(
    path: str | os.PathLike[str], sep: str | None = None, orientation: str = GENES_X_CELLS
) -> list[str]:
    """The gene names of a count-matrix file, as :func:`parse_count_matrix` gives them.

    For ``cells_x_genes`` the genes are the header: only the first line is read. For
    ``genes_x_cells``, reads the header row (validated as the parser does) and the first field
    of each row, and skips the rest of each row with a byte search, so no count is parsed:
    half the time of a full parse, without numba or the matrix's memory. Rows whose gene name
    needs more than a plain read (a quoted name, an empty or non-UTF-8 one, a row without
    counts) and a file without gene rows go to the full parser, which returns the names or
    raises its error.

    The counts are not read, so a file whose counts are malformed still gives its names; its
    own :func:`parse_count_matrix` raises.

    Parameters
    ----------
    path
        A count matrix as text, gzipped or not.
    sep
        ``","`` or ``"\\t"``; None to detect it from the header line.
    orientation
        ``"genes_x_cells"`` or ``"cells_x_genes"``.

    Raises
    ------
    CountMatrixError
        If the file is neither gzip nor text, or its header row or gene names are malformed.
    """
    TextLayout(orientation=orientation)  # validates the orientation
    names = _plain_gene_names(path, sep, orientation)
    if names is not None:
        return names
    from sc_assets.core._csv_parser import parse_count_matrix  # numba: only when needed

    return parse_count_matrix(path, sep=sep, orientation=orientation).genes


def read_header_line(blocks: Iterator[bytes]) -> tuple[bytes, bytes] | None:
    """The first line of the text in ``blocks`` (without its newline) and what follows it in
    the block where it ends; None if the text has no newline."""
    head: list[bytes] = []
    for data in blocks:
        newline = data.find(b"\n")
        if newline >= 0:
            head.append(data[:newline])
            return b"".join(head), data[newline + 1 :]
        head.append(data)
    return None


def header_layout(line: bytes, sep: str | None, orientation: str) -> TextLayout:
    """The layout of a file whose header line is ``line``: ``sep`` or the one it holds."""
    if sep is None:
        sep = detect_separator(line.removeprefix(_BOM)) or ","
    return TextLayout(sep, orientation)


def _plain_gene_names(
    path: str | os.PathLike[str], sep: str | None, orientation: str
) -> list[str] | None:
    """The gene names, or None where the full parser must decide (see read_gene_names)."""
    with decompressed_blocks(path) as blocks:
        chunks = (block.tobytes() for block in blocks)
        found = read_header_line(chunks)
        if found is None:
            return None  # no data row (or no data at all)
        line, rest = found
        layout = header_layout(line, sep, orientation)
        _, names = parse_header(path, line, layout)
        if not layout.rows_are_genes:
            # The header alone would be a valid file of no cells: the parser decides that.
            return names if rest.strip(b"\r\n") or any(c.strip(b"\r\n") for c in chunks) else None
        names = _names_of_rows(itertools.chain([rest], chunks), layout.sep.encode())
    try:
        return None if names is None else [name.decode("utf-8") for name in names]
    except UnicodeDecodeError:
        return None


def _names_of_rows(chunks: Iterator[bytes], sep: bytes) -> list[bytes] | None:
    """The first field of each row of the text in ``chunks``; None for anything but plain."""
    names: list[bytes] = []
    pending = b""  # the start of a row whose name continues in the next chunk
    in_row = False  # inside a row whose name is taken: skip to its newline
    for chunk in chunks:
        data = pending + chunk if pending else chunk
        pending = b""
        pos, end = 0, len(data)
        while pos < end:
            if in_row:
                newline = data.find(b"\n", pos)
                if newline < 0:
                    break
                in_row, pos = False, newline + 1
                continue
            first = data[pos]
            if first == _NL:  # a blank line (skipped, as by the parser)
                pos += 1
                continue
            if first == _CR:
                if pos + 1 == end:
                    pending = data[pos:]
                    break
                if data[pos + 1] == _NL:
                    pos += 2
                    continue
            if first == _QUOTE:
                return None
            cut = data.find(sep, pos)
            if data.find(b"\n", pos, end if cut < 0 else cut) >= 0:
                return None  # a row without counts
            if cut < 0:
                pending = data[pos:]
                break
            if cut == pos:
                return None  # an empty gene name
            names.append(data[pos:cut])
            in_row, pos = True, cut + 1
    if pending or not names:
        return None  # a last row without counts, or no gene rows
    return names
