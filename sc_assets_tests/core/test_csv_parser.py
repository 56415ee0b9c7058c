"""The streaming count-matrix parser equals the pandas tutorial recipe, on every accepted form.

Every text layout (comma or tab, gzipped or not, genes x cells or cells x genes) and every
spelling of it (line endings, BOM, quoting, float counts...).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sc_assets.core import _csv_parser, _decompress
from sc_assets.core._csv_parser import ParsedCountMatrix, parse_count_matrix
from sc_assets.core.errors import CountMatrixError
from sc_assets_tests.core.csv_variants import (
    CELLS_X_GENES,
    GENES_X_CELLS,
    INT32_MAX,
    LAYOUTS,
    Variant,
    assert_same_matrix,
    hypothesis_settings,
    layout_id,
    layouts,
    matrices,
    pandas_reference,
    random_counts,
    variants,
    write_count_csv,
    write_gz,
)

ORIENTATIONS = [GENES_X_CELLS, CELLS_X_GENES]


def parse(path: Path, variant: Variant, flag_prefix: str = "", **kwargs) -> ParsedCountMatrix:
    """Parse as the variant is oriented; the separator is detected, as by default."""
    return parse_count_matrix(path, flag_prefix, orientation=variant.orientation, **kwargs)


@pytest.fixture
def small_blocks(monkeypatch):
    """Decode in tiny blocks, bucket in tiny chunks and buckets, two-thread final pass."""
    monkeypatch.setattr(_decompress, "BLOCK_SIZE", 64)
    monkeypatch.setattr(_csv_parser, "_CHUNK_BITS", 1)
    monkeypatch.setattr(_csv_parser, "_BUCKET_SHIFT", 2)
    monkeypatch.setattr(_csv_parser, "_PARALLEL_PLACE_MIN_NNZ", 1)


@hypothesis_settings
@given(matrix=matrices(), layout=layouts)
def test_random_matrices_equal_pandas(tmp_path: Path, matrix, layout: Variant) -> None:
    counts, genes, barcodes = matrix
    path = write_count_csv(tmp_path / f"m{layout.suffix}", counts, genes, barcodes, layout)
    reference = pandas_reference(path, layout)
    assert_same_matrix(parse(path, layout, "MT-"), reference, "MT-")
    assert np.array_equal(reference.counts, counts.T)  # and pandas read what was written


@hypothesis_settings
@given(matrix=matrices(), variant=variants)
def test_format_variants_equal_pandas(tmp_path: Path, matrix, variant: Variant) -> None:
    counts, genes, barcodes = matrix
    path = write_count_csv(tmp_path / f"v{variant.suffix}", counts, genes, barcodes, variant)
    # quoted gene names too: the prefix is matched on the unquoted name
    assert_same_matrix(parse(path, variant, "MT-"), pandas_reference(path, variant), "MT-")


@hypothesis_settings
@given(matrix=matrices(), variant=variants, block_size=st.integers(1, 80))
def test_any_block_size_gives_the_same_result(
    tmp_path: Path, monkeypatch, matrix, variant: Variant, block_size: int
) -> None:
    counts, genes, barcodes = matrix
    path = write_count_csv(tmp_path / f"b{variant.suffix}", counts, genes, barcodes, variant)
    expected = parse(path, variant)
    with monkeypatch.context() as m:
        m.setattr(_decompress, "BLOCK_SIZE", block_size)
        m.setattr(_csv_parser, "_CHUNK_BITS", 0)
        m.setattr(_csv_parser, "_BUCKET_SHIFT", block_size % 4)
        m.setattr(_csv_parser, "_PARALLEL_PLACE_MIN_NNZ", 1)
        got = parse(path, variant)
    assert_same_matrix(got, pandas_reference(path, variant))
    assert (got.X != expected.X).nnz == 0


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 5000), (5000, 1), (300, 200)])
def test_extreme_shapes(tmp_path: Path, shape: tuple[int, int], orientation, small_blocks) -> None:
    counts = random_counts(np.random.default_rng(sum(shape)), shape, 0.3)
    variant = Variant(orientation=orientation)
    path = write_count_csv(tmp_path / "s.csv.gz", counts, variant=variant)
    assert_same_matrix(parse(path, variant), pandas_reference(path, variant))


@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
def test_rows_spanning_block_edges(tmp_path: Path, layout: Variant, small_blocks) -> None:
    """With 64-byte blocks every row, the header and many numbers cross a block edge."""
    rng = np.random.default_rng(7)
    counts = random_counts(rng, (50, 40), 0.5)
    variant = Variant(layout.sep, layout.compress, layout.orientation, newline="\r\n")
    path = write_count_csv(tmp_path / f"e{layout.suffix}", counts, variant=variant)
    assert_same_matrix(parse(path, variant), pandas_reference(path, variant))


@pytest.mark.parametrize("sep", [",", "\t"])
@pytest.mark.parametrize("block_size", [1, 2, 3, 7, 8, 9, 63, 64, 65])
def test_every_cut_of_one_line(tmp_path: Path, monkeypatch, block_size: int, sep: str) -> None:
    """A line of long numbers and CRLF, cut at every kind of position."""
    monkeypatch.setattr(_decompress, "BLOCK_SIZE", block_size)
    counts = np.array([[INT32_MAX, 0, 0, 0, 0, 0, 12345, 0, 1], [0, 7, 0, 0, 0, 0, 0, 0, 0]])
    variant = Variant(sep=sep, newline="\r\n")
    path = write_count_csv(tmp_path / "c.csv.gz", counts, variant=variant)
    assert_same_matrix(parse_count_matrix(path), pandas_reference(path, variant))


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_the_separator_is_detected_from_the_header(tmp_path: Path, compress: bool) -> None:
    """The more frequent of tab and comma outside quotes; a comma inside a TSV name is text."""
    text = 'gene\t"a,b"\tc,d\tAAAC-3\nG1,x\t1\t0\t2\n"G,2"\t0\t3\t0\n'
    path = tmp_path / "t.tsv"
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    parsed = parse_count_matrix(path)
    assert parsed.barcodes == ["a,b", "c,d", "AAAC-3"]
    assert parsed.genes == ["G1,x", "G,2"]
    assert parsed.X.toarray().tolist() == [[1, 0], [0, 3], [2, 0]]
    assert (parse_count_matrix(path, sep="\t").X != parsed.X).nnz == 0
    with pytest.raises(CountMatrixError, match=r"line 2, column 2: 'x\\t1\\t0\\t2' is not a"):
        parse_count_matrix(path, sep=",")  # as a CSV


def test_large_values_round_like_float32(tmp_path: Path) -> None:
    values = [2**24, 2**24 + 1, 2**24 + 3, 123456789, INT32_MAX - 1, INT32_MAX]
    counts = np.array([values])
    path = write_count_csv(tmp_path / "big.csv.gz", counts)
    parsed = parse_count_matrix(path)
    assert_same_matrix(parsed, pandas_reference(path))
    assert parsed.X.toarray().ravel().tolist() == np.array(values, np.float32).tolist()


def test_accepted_number_spellings(tmp_path: Path) -> None:
    """Whole numbers in any spelling pandas reads; spaces and tabs around them are ignored."""
    spellings = [
        "3",
        "003",
        "+3",
        "3.",
        "3.0",
        "3.000",
        "3e0",
        "0.3e1",
        "30e-1",
        '"3"',
        '" 3 "',
        " 3",
        "3\t",
    ]
    zeros = ["0", "-0", "0.0", "-0.0", "0e5", "00", ".0", "+0"]
    header = "," + ",".join(f"c{j}" for j in range(len(spellings)))
    text = f"{header}\nA,{','.join(spellings)}\nB,{','.join(zeros + ['1'] * 5)}\n"
    path = write_gz(tmp_path / "n.csv.gz", text.encode())
    parsed = parse_count_matrix(path)
    assert parsed.X.toarray().tolist() == [[3.0, 1.0 if j >= 8 else 0.0] for j in range(13)]


def test_quoted_fields_keep_their_text(tmp_path: Path) -> None:
    text = '"","AAAC-1","b,""2"""\n"GENE, with comma",1,0\n"""Q""",0,2\n'
    path = write_gz(tmp_path / "q.csv.gz", text.encode())
    parsed = parse_count_matrix(path)
    assert parsed.barcodes == ["AAAC-1", 'b,"2"']
    assert parsed.genes == ["GENE, with comma", '"Q"']
    assert parsed.X.toarray().tolist() == [[1, 0], [0, 2]]
    assert_same_matrix(parsed, pandas_reference(path))


def test_blank_lines_are_skipped_and_unicode_names_kept(tmp_path: Path) -> None:
    text = ",Zelle-ä,β-2\n\nGÈNE1,1,2\r\n\r\nМТ-CO1,0,5\n\n\n"
    path = write_gz(tmp_path / "u.csv.gz", text.encode())
    parsed = parse_count_matrix(path)
    assert parsed.barcodes == ["Zelle-ä", "β-2"]
    assert parsed.genes == ["GÈNE1", "МТ-CO1"]
    assert parsed.X.toarray().tolist() == [[1, 0], [2, 5]]


def test_output_is_canonical_csr(tmp_path: Path) -> None:
    counts = random_counts(np.random.default_rng(3), (40, 30), 0.3)
    path = write_count_csv(tmp_path / "k.csv.gz", counts)
    parsed = parse_count_matrix(path)
    assert isinstance(parsed, ParsedCountMatrix)
    X = parsed.X
    assert X.has_canonical_format
    check = X.copy()
    check.has_sorted_indices = False
    check.sort_indices()
    check.eliminate_zeros()
    assert np.array_equal(check.indices, X.indices) and check.nnz == X.nnz
    assert np.array_equal(X.toarray(), counts.T.astype(np.float32))


def test_plain_text_with_bom_and_crlf(tmp_path: Path, small_blocks) -> None:
    counts = random_counts(np.random.default_rng(2), (30, 20), 0.4)
    variant = Variant(compress=False, bom=True, newline="\r\n", final_newline=False)
    path = write_count_csv(tmp_path / "p.csv", counts, variant=variant)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf,AAAC-0,")
    assert_same_matrix(parse_count_matrix(path), pandas_reference(path, variant))


def test_cells_x_genes_flags_the_header_genes_and_keeps_repeats(tmp_path: Path) -> None:
    """MT- genes are the header's; a barcode starting with MT- is not a gene; repeats kept."""
    text = "cell,MT-CO1,ACTB,MT-CO1,ACTB\nMT-AAAC,1,2,3,0\nCCCG,0,0,4,5\nGGGT,0,0,0,0\n"
    path = write_gz(tmp_path / "c.csv.gz", text.encode())
    parsed = parse_count_matrix(path, "MT-", orientation=CELLS_X_GENES)
    assert parsed.barcodes == ["MT-AAAC", "CCCG", "GGGT"]
    assert parsed.genes == ["MT-CO1", "ACTB", "MT-CO1", "ACTB"]
    assert parsed.X.toarray().tolist() == [[1, 2, 3, 0], [0, 0, 4, 5], [0, 0, 0, 0]]
    sums = parsed.sums
    assert sums.cell_flagged_total.tolist() == [4, 4, 0]
    assert sums.cell_total.tolist() == [6, 9, 0] and sums.cell_nnz.tolist() == [3, 2, 0]
    assert sums.gene_total.tolist() == [1, 2, 7, 5] and sums.gene_nnz.tolist() == [1, 1, 2, 1]
    assert sums.gene_flagged.tolist() == [True, False, True, False]


def test_cells_x_genes_repeated_barcode_names_its_lines(tmp_path: Path) -> None:
    text = "\tG1\tG2\nAAAC\t1\t0\nCCCG\t0\t1\n\nAAAC\t2\t2\n"
    path = tmp_path / "d.tsv"
    path.write_text(text)
    with pytest.raises(CountMatrixError) as caught:
        parse_count_matrix(path, orientation=CELLS_X_GENES)
    message = str(caught.value)
    assert message.startswith(f"{path}, line 5, column 1: barcode 'AAAC' appears twice")
    assert "lines 2 and 5" in message


def test_an_unknown_orientation_is_a_value_error(tmp_path: Path) -> None:
    path = write_count_csv(tmp_path / "o.csv.gz", np.ones((2, 2), dtype=int))
    with pytest.raises(ValueError, match="unknown orientation 'genes_by_cells'"):
        parse_count_matrix(path, orientation="genes_by_cells")


def test_stdlib_decoder_gives_identical_results(tmp_path: Path, monkeypatch) -> None:
    counts = random_counts(np.random.default_rng(11), (60, 25), 0.3)
    path = write_count_csv(tmp_path / "d.csv.gz", counts, variant=Variant(members=3))
    fast = parse_count_matrix(path)
    monkeypatch.setattr(_decompress, "DECODER", _decompress.STDLIB_DECODER)
    slow = parse_count_matrix(path)
    assert fast.barcodes == slow.barcodes and fast.genes == slow.genes
    assert (fast.X != slow.X).nnz == 0
    assert_same_matrix(slow, pandas_reference(path))


def test_zero_padding_after_the_gzip_stream_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "z.csv.gz"
    path.write_bytes(gzip.compress(b",a,b\nG,1,0\n") + b"\0" * 100)
    assert parse_count_matrix(path).X.toarray().tolist() == [[1], [0]]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("threads", ["one thread", "two threads"])
def test_copy_is_equal_and_independent(
    tmp_path: Path, monkeypatch, threads: str, orientation: str
) -> None:
    if threads == "two threads":
        monkeypatch.setattr(_csv_parser, "_PARALLEL_PLACE_MIN_NNZ", 1)
    counts = random_counts(np.random.default_rng(5), (50, 70), 0.3)
    variant = Variant(orientation=orientation)
    path = write_count_csv(tmp_path / "c.csv.gz", counts, variant=variant)
    parsed = parse(path, variant, with_copy=True)
    X, copy = parsed.X, parsed.X_copy
    assert parse(path, variant).X_copy is None
    for a, b in ((X.data, copy.data), (X.indices, copy.indices), (X.indptr, copy.indptr)):
        assert np.array_equal(a, b) and a.dtype == b.dtype
        assert not np.shares_memory(a, b)
        # its own memory, exactly the size of the data (not a view of the parser's pool)
        assert b.base is None or b.base.nbytes == b.nbytes
    copy.data[:] = 0  # e.g. normalising X in place must leave the raw counts alone
    assert np.array_equal(X.toarray(), counts.T.astype(np.float32))


@pytest.mark.parametrize("setting", [True, False])
def test_small_pages_restores_numpys_huge_page_setting(setting: bool) -> None:
    switch = np._core.multiarray._set_madvise_hugepage
    previous = switch(setting)
    try:
        with _csv_parser._small_pages():
            assert switch(False) is False  # off inside the block
        assert switch(setting) is setting  # restored on exit
    finally:
        switch(previous)
