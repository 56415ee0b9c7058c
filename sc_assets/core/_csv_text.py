"""The text of a count-matrix CSV around the counts, in plain Python (no numba).

The header row (:func:`parse_header`, shared with the numba parser) and a reader of the gene
names alone (:func:`read_gene_names`), for callers that need a sample's gene list but not its
counts, such as pinning the reference gene list.
"""

from __future__ import annotations

import csv
import itertools
import os
import re
from collections.abc import Iterator

from sc_assets.core._decompress import decompressed_blocks
from sc_assets.core.errors import CountMatrixError

_BOM = b"\xef\xbb\xbf"
_NL, _CR, _QUOTE = 10, 13, 34


def quote_text(text: str) -> str:
    """``text`` quoted for an error message, shortened to 40 characters."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


_NUMBER_RE = re.compile(r"[ \t]*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[ \t]*|[+-]?(nan|inf)", re.I)


def parse_header(path: str | os.PathLike[str], raw: bytes) -> tuple[str, list[str]]:
    """The corner field and the barcodes of the header line ``raw`` (without its newline)."""
    raw = raw.removeprefix(_BOM).removesuffix(b"\r")
    if not raw:
        raise CountMatrixError(
            path, "the first line is empty: expected the header row of cell barcodes", line=1
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = f"the header row is not UTF-8 text (byte {exc.start + 1}); is this a CSV file?"
        raise CountMatrixError(path, problem, line=1) from None
    try:
        fields = next(csv.reader([text], strict=True))
    except csv.Error as exc:
        problem = f"the header row has a badly quoted field ({exc})"
        raise CountMatrixError(path, problem, line=1) from None
    corner, barcodes = fields[0], fields[1:]
    if not barcodes:
        problem = "the header row has no cell barcodes: expected a corner field, then one barcode"
        raise CountMatrixError(path, problem + " per cell, separated by commas", line=1)
    if all(_NUMBER_RE.fullmatch(b) for b in barcodes):
        problem = (
            f"the first line looks like a gene row, not a header: all {len(barcodes)} fields after"
            " the first are numbers; the file must start with a header row of cell barcodes"
        )
        raise CountMatrixError(path, problem, line=1)
    if barcodes[-1] == "":
        problem = "the header row ends with a comma (an empty last field)"
        raise CountMatrixError(path, problem, line=1, column=len(fields))
    seen: dict[str, int] = {}
    for column, barcode in enumerate(barcodes, start=2):
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
    return corner, barcodes


def read_gene_names(path: str | os.PathLike[str]) -> list[str]:
    """The gene names of a count-matrix file, as :func:`parse_count_matrix` gives them.

    Reads the header row (validated as the parser does) and the first field of each row, and
    skips the rest of each row with a byte search, so no count is parsed: half the time of a
    full parse, without numba or the matrix's memory. Rows whose gene name needs more than a
    plain read (a quoted name, an empty or non-UTF-8 one, a row without counts) and a file
    without gene rows go to the full parser, which returns the names or raises its error.

    The counts are not read, so a file whose counts are malformed still gives its names; its
    own :func:`parse_count_matrix` raises.

    Raises
    ------
    CountMatrixError
        If the file is not gzip, or its header row or gene names are malformed.
    """
    names = _plain_gene_names(path)
    if names is not None:
        try:
            return [name.decode("utf-8") for name in names]
        except UnicodeDecodeError:
            pass
    from sc_assets.core._csv_parser import parse_count_matrix  # numba: only when needed

    return parse_count_matrix(path).genes


def _plain_gene_names(path: str | os.PathLike[str]) -> list[bytes] | None:
    """The raw gene names, or None where the full parser must decide (see read_gene_names)."""
    with decompressed_blocks(path) as blocks:
        chunks = (block.tobytes() for block in blocks)
        head: list[bytes] = []
        for data in chunks:
            newline = data.find(b"\n")
            if newline >= 0:
                head.append(data[:newline])
                break
            head.append(data)
        else:
            return None  # no data row (or no data at all)
        parse_header(path, b"".join(head))
        return _names_of_rows(itertools.chain([data[newline + 1 :]], chunks))


def _names_of_rows(chunks: Iterator[bytes]) -> list[bytes] | None:
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
            comma = data.find(b",", pos)
            if data.find(b"\n", pos, end if comma < 0 else comma) >= 0:
                return None  # a row without counts
            if comma < 0:
                pending = data[pos:]
                break
            if comma == pos:
                return None  # an empty gene name
            names.append(data[pos:comma])
            in_row, pos = True, comma + 1
    if pending or not names:
        return None  # a last row without counts, or no gene rows
    return names
