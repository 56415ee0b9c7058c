"""Every malformed count-matrix file raises CountMatrixError naming the file, line and problem."""

from __future__ import annotations

import gzip
import threading
from pathlib import Path

import pytest

from sc_assets.core import _decompress
from sc_assets.core._csv_parser import parse_count_matrix
from sc_assets.core.errors import CountMatrixError

HEADER = ",AAAC-1,AAAC-2,AAAC-3\n"
GOOD_ROW = "G1,1,0,2\n"


def gz(text: str | bytes) -> bytes:
    return gzip.compress(text.encode() if isinstance(text, str) else text)


def with_row(row: str) -> bytes:
    """A file whose second gene row (line 3) is ``row``."""
    return gz(HEADER + GOOD_ROW + row)


_GOOD = gz(HEADER + GOOD_ROW)

# (file content, line, column, a phrase the message must contain)
CASES = {
    "truncated_gzip": (gz(HEADER + GOOD_ROW * 2000)[:-40], None, None, "truncated"),
    "not_gzip": ((HEADER + GOOD_ROW).encode(), None, None, "not a gzip file"),
    "random_bytes": (bytes(range(7, 250)) * 3, None, None, "not the gzip signature"),
    "gzipped_random_bytes": (gz(bytes(range(128, 256)) * 4), 1, None, "not UTF-8"),
    "empty_file": (b"", None, None, "empty (0 bytes)"),
    "empty_gzip": (gz(b""), None, None, "decompresses to nothing"),
    "corrupt_gzip": (_GOOD[:-8] + b"\0\0\0\0" + _GOOD[-4:], None, None, "corrupt"),
    "data_after_gzip": (_GOOD + b"trailing text that is not gzip", None, None, "after the end"),
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


@pytest.mark.parametrize(("content", "line", "column", "phrase"), CASES.values(), ids=CASES)
def test_malformed_file_is_reported(
    tmp_path: Path, content: bytes, line: int | None, column: int | None, phrase: str
) -> None:
    path = tmp_path / "GSM0000001_Bad1_count_matrix.csv.gz"
    path.write_bytes(content)
    with pytest.raises(CountMatrixError) as caught:
        parse_count_matrix(path)
    error = caught.value
    message = str(error)
    assert isinstance(error, ValueError)
    assert message.startswith(str(path))
    assert phrase in message, message
    assert error.line == line and error.column == column, message
    if line is not None:
        assert f", line {line}" in message
    if column is not None:
        assert f", column {column}:" in message


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
