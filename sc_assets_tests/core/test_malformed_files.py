"""Every malformed count-matrix file raises CountMatrixError naming the file, line and problem.

In every text layout: :data:`CASES` are GEO's gzipped CSVs, :func:`layout_case` spells the
cases about the text (not the gzip container) in any other layout.
"""

from __future__ import annotations

import gzip
import threading
from pathlib import Path

import numpy as np
import pytest

from sc_assets.core import _decompress
from sc_assets.core._csv_parser import parse_count_matrix
from sc_assets.core.errors import CountMatrixError
from sc_assets_tests.core.csv_variants import (
    CELLS_X_GENES,
    LAYOUTS,
    Variant,
    layout_id,
    write_count_csv,
)

HEADER = ",AAAC-1,AAAC-2,AAAC-3\n"
GOOD_ROW = "G1,1,0,2\n"


def gz(text: str | bytes) -> bytes:
    return gzip.compress(text.encode() if isinstance(text, str) else text)


def with_row(row: str) -> bytes:
    """A file whose second gene row (line 3) is ``row``."""
    return gz(HEADER + GOOD_ROW + row)


_GOOD = gz(HEADER + GOOD_ROW)

# (file content, line, column, a phrase the message must contain)
#: Cases about the gzip container or the bytes, not the text (the same in every layout).
CONTAINER_CASES = {
    "truncated_gzip": (gz(HEADER + GOOD_ROW * 2000)[:-40], None, None, "truncated"),
    "random_bytes": (bytes(range(7, 250)) * 3, None, None, "neither text (CSV or TSV) nor gzip"),
    "binary_after_bom": (b"\xef\xbb\xbf\x00\x01\x02", None, None, "neither text"),
    "zip_archive": (b"PK\x03\x04" + bytes(60), None, None, "starts with bytes 50 4b 03 04"),
    "gzipped_random_bytes": (gz(bytes(range(128, 256)) * 4), 1, None, "not UTF-8"),
    "empty_file": (b"", None, None, "empty (0 bytes)"),
    "empty_gzip": (gz(b""), None, None, "decompresses to nothing"),
    "corrupt_gzip": (_GOOD[:-8] + b"\0\0\0\0" + _GOOD[-4:], None, None, "corrupt"),
    "data_after_gzip": (_GOOD + b"trailing text that is not gzip", None, None, "after the end"),
}

CASES = {
    **CONTAINER_CASES,
    "header_only": (gz(HEADER), None, None, "no gene rows"),
    "header_only_with_blank_lines": (gz(HEADER + "\n\r\n"), None, None, "no gene rows"),
    "no_header_row": (gz("G0,1,0,2\n" + GOOD_ROW), 1, None, "looks like a gene row"),
    "blank_first_line": (gz("\n" + HEADER + GOOD_ROW), 1, None, "first line is empty"),
    "header_without_barcodes": (gz("gene\nG1\n"), 1, None, "no cell barcodes"),
    "header_trailing_comma": (gz(",A,B,\nG1,1,0,2\n"), 1, 4, "header row ends with a comma"),
    "empty_barcode": (gz(",A,,C\nG1,1,0,2\n"), 1, 3, "barcode is empty"),
    "duplicated_barcodes": (gz(",A,B,A\nG1,1,0,2\n"), 1, 4, "'A' appears twice"),
    "bad_quote_in_header": (gz(',"A,B,C\nG1,1,0,2\n'), 1, None, "badly quoted"),
    "header_not_utf8": (gz(b",A\xff,B,C\nG1,1,0,2\n"), 1, None, "not UTF-8"),
    "short_row": (with_row("G2,1,0\n"), 3, None, "expected 4 fields"),
    "gene_name_only": (with_row("G2\n"), 3, None, "but found 1"),
    "long_row": (with_row("G2,1,0,2,5\n"), 3, 5, "but found 5"),
    "header_without_corner": (gz("A,B,C\nG1,1,0,2\n"), 2, 4, "lacks its corner field"),
    "trailing_comma": (with_row("G2,1,0,2,\n"), 3, 5, "ends with a comma"),
    "non_numeric": (with_row("G2,1,x7,2\n"), 3, 3, "'x7' is not a number"),
    "negative": (with_row("G2,1,-3,2\n"), 3, 3, "'-3' is negative"),
    "non_integer": (with_row("G2,1,0,1.5\n"), 3, 4, "'1.5' is not a whole number"),
    "NaN": (with_row("G2,NaN,0,1\n"), 3, 2, "is NaN"),
    "nan": (with_row("G2,1,nan,1\n"), 3, 3, "is NaN"),
    "inf": (with_row("G2,1,inf,1\n"), 3, 3, "is infinite"),
    "minus_inf": (with_row("G2,1,0,-inf\n"), 3, 4, "is infinite"),
    "missing_value_NA": (with_row("G2,1,NA,1\n"), 3, 3, "missing value"),
    "beyond_int32": (with_row("G2,1,2147483648,1\n"), 3, 3, "at most 2147483647"),
    "beyond_int64": (with_row("G2,1,99999999999999999999999,1\n"), 3, 3, "too large"),
    "empty_gene_name": (with_row(",1,0,2\n"), 3, 1, "gene name (first field) is empty"),
    "empty_value": (with_row("G2,1,,2\n"), 3, 3, "count is empty"),
    "empty_last_value": (with_row("G2,1,0,\n"), 3, 4, "count is empty"),
    "unclosed_quote": (with_row('"G2,1,0,2\n'), 3, 1, "not closed"),
    "text_after_quote": (with_row('"G2"x,1,0,2\n'), 3, 1, "after the closing quote"),
    "gene_name_not_utf8": (gz((HEADER + GOOD_ROW).encode() + b"G\xff,1,0,2\n"), 3, 1, "UTF-8"),
    "bad_row_after_blank_lines": (with_row("\n\r\nG2,1,0\n"), 5, None, "expected 4 fields"),
}


#: What changes in a cells_x_genes file (a header of genes, a row per barcode): the phrase,
#: or None where the text is valid (repeated genes are fine).
CELLS_X_GENES_PHRASES = {
    "no_header_row": "looks like a cell row",
    "blank_first_line": "header row of gene symbols",
    "header_without_barcodes": "no gene symbols",
    "empty_barcode": "gene symbol is empty",
    "duplicated_barcodes": None,
    "header_only": "no cell rows",
    "header_only_with_blank_lines": "no cell rows",
    "empty_gene_name": "barcode (first field) is empty",
}

#: Cases only cells_x_genes files have: (text, line, column, phrase).
CELLS_X_GENES_CASES = {
    "duplicated_row_barcodes": (
        HEADER + GOOD_ROW + "G2,0,0,0\n\nG1,0,1,0\n",
        5,
        1,
        "barcode 'G1' appears twice, on lines 2 and 5",
    ),
}


def layout_case(name: str, layout: Variant) -> tuple[bytes, int | None, int | None, str] | None:
    """Case ``name`` of :data:`CASES` (a text case) spelled in ``layout``; None if valid."""
    if name in CELLS_X_GENES_CASES:
        text, line, column, phrase = CELLS_X_GENES_CASES[name]
        content = text.encode()
    else:
        content, line, column, phrase = CASES[name]
        content = gzip.decompress(content)
        if layout.orientation == CELLS_X_GENES:
            phrase = CELLS_X_GENES_PHRASES.get(name, phrase)
            if phrase is None:
                return None
    if layout.sep == "\t":
        content = content.replace(b",", b"\t")
        phrase = phrase.replace("with a comma", "with a tab")
    return (gzip.compress(content) if layout.compress else content), line, column, phrase


TEXT_CASES = [name for name in CASES if name not in CONTAINER_CASES]
LAYOUT_CASES = [
    pytest.param(name, layout, id=f"{layout_id(layout)}-{name}")
    for layout in LAYOUTS
    for name in [*TEXT_CASES, *(CELLS_X_GENES_CASES if layout.orientation == CELLS_X_GENES else [])]
    if layout_case(name, layout) is not None
]


def assert_reported(
    error: CountMatrixError, path: Path, line: int | None, column: int | None, phrase: str
) -> None:
    """The error names the file, the line and column (when expected) and the problem."""
    message = str(error)
    assert isinstance(error, ValueError)
    assert message.startswith(str(path))
    assert phrase in message, message
    assert error.line == line and error.column == column, message
    if line is not None:
        assert f", line {line}" in message
    if column is not None:
        assert f", column {column}:" in message


@pytest.mark.parametrize(("content", "line", "column", "phrase"), CASES.values(), ids=CASES)
def test_malformed_file_is_reported(
    tmp_path: Path, content: bytes, line: int | None, column: int | None, phrase: str
) -> None:
    path = tmp_path / "GSM0000001_Bad1_count_matrix.csv.gz"
    path.write_bytes(content)
    with pytest.raises(CountMatrixError) as caught:
        parse_count_matrix(path)
    assert_reported(caught.value, path, line, column, phrase)


@pytest.mark.parametrize(("name", "layout"), LAYOUT_CASES)
def test_malformed_text_is_reported_in_every_layout(
    tmp_path: Path, name: str, layout: Variant
) -> None:
    content, line, column, phrase = layout_case(name, layout)
    path = tmp_path / f"bad{layout.suffix}"
    path.write_bytes(content)
    with pytest.raises(CountMatrixError) as caught:
        parse_count_matrix(path, sep=layout.sep, orientation=layout.orientation)
    assert_reported(caught.value, path, line, column, phrase)


def test_tsv_messages_name_the_tab(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("\tA\tB\nG1\t1\t2\t\n")
    with pytest.raises(CountMatrixError, match="line 2, column 4: the line ends with a tab"):
        parse_count_matrix(path)
    path.write_text('\tA\tB\nG1\t1\t"2"x\n')
    with pytest.raises(CountMatrixError, match="column 3: unexpected .* a field ends at a tab"):
        parse_count_matrix(path)
    path.write_text("gene\nG1\t1\n")
    with pytest.raises(CountMatrixError, match="no cell barcodes: .* separated by tabs"):
        parse_count_matrix(path, sep="\t")


@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
def test_plain_text_is_valid(tmp_path: Path, layout: Variant) -> None:
    """What used to be "not a gzip file" is a count matrix like any other."""
    counts = [[1, 0, 2], [0, 3, 0]]
    path = write_count_csv(tmp_path / f"p{layout.suffix}", np.array(counts), variant=layout)
    parsed = parse_count_matrix(path, orientation=layout.orientation)
    assert parsed.X.toarray().T.tolist() == counts


def test_errors_are_found_across_block_edges(tmp_path: Path, monkeypatch) -> None:
    """Tiny blocks: the bad token is cut by a block edge; line and column stay exact."""
    monkeypatch.setattr(_decompress, "BLOCK_SIZE", 5)
    rows = "".join(f"G{i},{i},0,0\r\n" for i in range(30))
    path = tmp_path / "edge.csv.gz"
    path.write_bytes(gz(HEADER + rows + "G30,0,12.25,0\r\n" + rows))
    with pytest.raises(CountMatrixError, match=r"line 32, column 3: '12.25' is not a whole"):
        parse_count_matrix(path)


@pytest.mark.parametrize("block_size", [7, 1 << 20])
def test_truncated_file_with_any_block_size(tmp_path: Path, monkeypatch, block_size) -> None:
    monkeypatch.setattr(_decompress, "BLOCK_SIZE", block_size)
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gz(HEADER + GOOD_ROW * 500)[:-100])
    with pytest.raises(CountMatrixError, match="truncated"):
        parse_count_matrix(path)


@pytest.mark.parametrize("case", ["truncated_gzip", "corrupt_gzip", "data_after_gzip"])
def test_stdlib_decoder_reports_the_same_problems(tmp_path: Path, monkeypatch, case) -> None:
    monkeypatch.setattr(_decompress, "DECODER", _decompress.STDLIB_DECODER)
    content, _, _, phrase = CASES[case]
    path = tmp_path / "s.csv.gz"
    path.write_bytes(content)
    with pytest.raises(CountMatrixError, match=phrase):
        parse_count_matrix(path)


def test_decoder_thread_stops_after_an_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_decompress, "BLOCK_SIZE", 64)
    path = tmp_path / "stop.csv.gz"
    path.write_bytes(gz(HEADER + "G0,x,0,0\n" + GOOD_ROW * 5000))
    before = threading.active_count()
    with pytest.raises(CountMatrixError, match="'x' is not a number"):
        parse_count_matrix(path)
    assert threading.active_count() == before


def test_error_survives_pickling(tmp_path: Path) -> None:
    """Dagster moves exceptions between processes: the message must stay intact."""
    import pickle

    path = tmp_path / "p.csv.gz"
    path.write_bytes(with_row("G2,1,-3,2\n"))
    with pytest.raises(CountMatrixError) as caught:
        parse_count_matrix(path)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) and copy.line == 3 and copy.column == 3
