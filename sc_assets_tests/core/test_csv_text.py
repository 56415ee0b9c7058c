"""The gene-names reader gives the parser's names, and the parser's errors on header and names.

In every text layout; for cells_x_genes files the names are the header's.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sc_assets.core import _csv_parser, _decompress
from sc_assets.core._csv_parser import parse_count_matrix
from sc_assets.core._csv_text import read_gene_names
from sc_assets.core.errors import CountMatrixError
from sc_assets_tests.core.csv_variants import (
    CELLS_X_GENES,
    LAYOUTS,
    Variant,
    hypothesis_settings,
    layout_id,
    matrices,
    variants,
    write_count_csv,
)
from sc_assets_tests.core.test_malformed_files import (
    CASES,
    CELLS_X_GENES_CASES,
    TEXT_CASES,
    layout_case,
)

#: Malformed files whose header and gene names are fine: only the counts are wrong, which the
#: names reader does not read. Their gene names, by line.
COUNT_PROBLEMS = {
    "short_row": ["G1", "G2"],
    "long_row": ["G1", "G2"],
    "header_without_corner": ["G1"],
    "trailing_comma": ["G1", "G2"],
    "non_numeric": ["G1", "G2"],
    "negative": ["G1", "G2"],
    "non_integer": ["G1", "G2"],
    "NaN": ["G1", "G2"],
    "nan": ["G1", "G2"],
    "inf": ["G1", "G2"],
    "minus_inf": ["G1", "G2"],
    "missing_value_NA": ["G1", "G2"],
    "beyond_int32": ["G1", "G2"],
    "beyond_int64": ["G1", "G2"],
    "empty_value": ["G1", "G2"],
    "empty_last_value": ["G1", "G2"],
    "bad_row_after_blank_lines": ["G1", "G2"],
}


@hypothesis_settings
@given(matrix=matrices(), variant=variants, block_size=st.sampled_from([1, 7, 64, 1 << 21]))
def test_names_equal_the_parsers(
    tmp_path: Path, monkeypatch, matrix, variant: Variant, block_size: int
) -> None:
    counts, genes, barcodes = matrix
    path = write_count_csv(tmp_path / f"n{variant.suffix}", counts, genes, barcodes, variant)
    orientation = variant.orientation
    expected = parse_count_matrix(path, orientation=orientation).genes
    with monkeypatch.context() as m:
        m.setattr(_decompress, "BLOCK_SIZE", block_size)
        assert read_gene_names(path, orientation=orientation) == expected == genes
        assert read_gene_names(path, variant.sep, orientation) == genes


def write_text(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


def test_unusual_plain_names_are_read_as_the_parser_reads_them(tmp_path: Path, monkeypatch):
    """Blank lines, CRLF, a name starting with CR, UTF-8, a space, no final newline."""
    path = write_text(tmp_path / "u.csv.gz", ",A,B\n\n\rG1,1,0\r\n\r\nMT-\u00e9 ,0,2\nG4,0,0")
    expected = ["\rG1", "MT-\u00e9 ", "G4"]
    assert parse_count_matrix(path).genes == expected
    with monkeypatch.context() as m:  # read without the parser
        m.setattr(_csv_parser, "parse_count_matrix", None)
        assert read_gene_names(path) == expected


def test_quoted_names_are_left_to_the_parser(tmp_path: Path) -> None:
    path = write_text(tmp_path / "q.csv.gz", ',A,B\nG1,1,0\n"Q,""1""",3,0\n')
    assert read_gene_names(path) == parse_count_matrix(path).genes == ["G1", 'Q,"1"']


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        pytest.param(name, layout, id=f"{layout_id(layout)}-{name}")
        for layout in LAYOUTS[1:]  # the first, gzipped CSV genes x cells, is CASES
        for name in [*TEXT_CASES, *CELLS_X_GENES_CASES]
        if layout_case(name, layout) is not None
        and (name not in CELLS_X_GENES_CASES or layout.orientation == CELLS_X_GENES)
    ],
)
def test_malformed_files_in_every_layout(tmp_path: Path, name: str, layout: Variant) -> None:
    """As below; for cells_x_genes only the header is read: its problems, else its names."""
    content, line, _, _ = layout_case(name, layout)
    path = tmp_path / f"bad{layout.suffix}"
    path.write_bytes(content)
    orientation = layout.orientation
    if name in COUNT_PROBLEMS and orientation != CELLS_X_GENES:
        assert read_gene_names(path, layout.sep, orientation) == COUNT_PROBLEMS[name]
        return
    if orientation == CELLS_X_GENES and line is not None and line > 1:
        text = gzip.decompress(content) if layout.compress else content
        header = text.split(b"\n", 1)[0].decode().split(layout.sep)
        assert read_gene_names(path, layout.sep, orientation) == header[1:]
        return
    with pytest.raises(CountMatrixError) as parsing:
        parse_count_matrix(path, sep=layout.sep, orientation=orientation)
    with pytest.raises(CountMatrixError) as reading:
        read_gene_names(path, layout.sep, orientation)
    assert str(reading.value) == str(parsing.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_files(tmp_path: Path, case: str) -> None:
    """The parser's error for a bad header or gene name; the names when only counts are bad."""
    path = tmp_path / "GSM0000001_Bad1_count_matrix.csv.gz"
    path.write_bytes(CASES[case][0])
    if case in COUNT_PROBLEMS:
        assert read_gene_names(path) == COUNT_PROBLEMS[case]
        return
    with pytest.raises(CountMatrixError) as parsing:
        parse_count_matrix(path)
    with pytest.raises(CountMatrixError) as reading:
        read_gene_names(path)
    assert str(reading.value) == str(parsing.value)


def test_plain_files_are_read_without_numba(tmp_path: Path) -> None:
    """Pinning the reference gene list does not load the parser's compiled code."""
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 3, (40, 30))
    paths = [
        write_count_csv(tmp_path / f"p{i}{v.suffix}", counts, variant=v)
        for i, v in enumerate(LAYOUTS)
    ]
    code = (
        "import sys; from sc_assets.core._csv_text import read_gene_names; "
        "from sc_assets.core.genes import read_sample_genes; "
        f"layouts = {[(str(p), v.orientation) for p, v in zip(paths, LAYOUTS, strict=True)]!r}; "
        "print(len(read_sample_genes(layouts[0][0])), "
        "*(len(read_gene_names(p, orientation=o)) for p, o in layouts), 'numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["40"] * 9 + ["False"]
