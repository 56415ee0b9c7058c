import gzip

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sc_assets.core import count_matrix_writer
from sc_assets.core.count_matrix_writer import write_count_matrix

GENES = ["MIR1302-2HG", "TBCE", "CD3E", "TBCE", "MT-CO1"]
BARCODES = ["AAACCCACAAGCGATG-1", "AAACCCACATCGGTTA-1", "AAACCCAGTACAGAAT-1"]


def read_back(path) -> pd.DataFrame:
    return pd.read_csv(path, index_col=0)


def random_counts(n_cells: int, n_genes: int, seed: int = 0) -> sp.csr_array:
    rng = np.random.default_rng(seed)
    dense = rng.integers(0, 5, size=(n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < 0.2)
    dense[0, 0] = 987_654_321  # a wide value
    return sp.csr_array(dense)


def assert_round_trip(path, counts, genes, barcodes) -> None:
    frame = read_back(path)
    assert list(frame.index) == list(genes)  # duplicates kept, in order
    assert list(frame.columns) == list(barcodes)
    expected = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    assert np.array_equal(frame.to_numpy(), expected.T)
    assert all(dtype.kind == "i" for dtype in frame.dtypes)  # integers only, no "3.0"


def test_writes_the_exact_geo_layout(tmp_path):
    counts = sp.csr_array(np.array([[0, 3, 0, 1, 12], [0, 0, 0, 0, 0], [7, 0, 0, 0, 100]]))
    path = write_count_matrix(tmp_path / "x.csv.gz", counts, GENES, BARCODES)
    assert path == tmp_path / "x.csv.gz"
    with gzip.open(path, "rb") as f:
        text = f.read()
    assert text == (
        b",AAACCCACAAGCGATG-1,AAACCCACATCGGTTA-1,AAACCCAGTACAGAAT-1\n"
        b"MIR1302-2HG,0,0,7\n"
        b"TBCE,3,0,0\n"
        b"CD3E,0,0,0\n"
        b"TBCE,1,0,0\n"
        b"MT-CO1,12,0,100\n"
    )


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda m: m, id="csr-int64"),
        pytest.param(lambda m: sp.csc_matrix(m, dtype=np.int32), id="csc-int32"),
        pytest.param(lambda m: sp.csr_matrix(m, dtype=np.float32), id="csr-float32"),
        pytest.param(lambda m: sp.coo_array(m.minimum(60_000), dtype=np.uint16), id="coo-uint16"),
        pytest.param(lambda m: m.toarray().astype(np.float64), id="dense-float64"),
    ],
)
def test_round_trips_through_pandas(tmp_path, convert):
    counts = convert(random_counts(40, 5))
    barcodes = [f"BC{i:03d}-1" for i in range(40)]
    path = write_count_matrix(tmp_path / "x.csv.gz", counts, GENES, barcodes)
    assert_round_trip(path, counts, GENES, barcodes)


def test_anndata_defaults_to_var_and_obs_names(tmp_path):
    counts = random_counts(3, 5)
    adata = ad.AnnData(
        X=sp.csr_matrix(counts, dtype=np.float32),
        obs=pd.DataFrame(index=BARCODES),
        var=pd.DataFrame(index=["A", "B", "C", "D", "E"]),
    )
    path = write_count_matrix(tmp_path / "x.csv.gz", adata)
    assert_round_trip(path, adata.X, ["A", "B", "C", "D", "E"], BARCODES)
    # Explicit names win over the AnnData's (e.g. to write duplicated symbols).
    path = write_count_matrix(tmp_path / "y.csv.gz", adata, genes=GENES)
    assert_round_trip(path, adata.X, GENES, BARCODES)


def test_many_blocks_and_non_canonical_input(tmp_path, monkeypatch):
    monkeypatch.setattr(count_matrix_writer, "_BLOCK_BYTES", 64)  # a few genes per block
    n_cells, n_genes = 25, 300
    counts = random_counts(n_cells, n_genes, seed=3)
    # Unsorted, repeated entries (summed) and an explicit zero, as COO may hold them.
    coo = sp.coo_array(counts)
    rows = np.concatenate([coo.row[::-1], [1, 1, 2]])
    cols = np.concatenate([coo.col[::-1], [7, 7, 9]])
    values = np.concatenate([coo.data[::-1], [2, 3, 0]])
    messy = sp.csc_matrix((values, (rows, cols)), shape=counts.shape)
    messy.has_sorted_indices = False
    before = (messy.data.copy(), messy.indices.copy())
    expected = counts.toarray()
    expected[1, 7] += 5
    genes = [f"G{i}" for i in range(n_genes)]
    barcodes = [f"C{i}" for i in range(n_cells)]
    path = write_count_matrix(tmp_path / "x.csv.gz", messy, genes, barcodes)
    assert_round_trip(path, expected, genes, barcodes)
    # The caller's matrix is left as it was.
    assert np.array_equal(messy.data, before[0]) and np.array_equal(messy.indices, before[1])


def test_negative_and_extreme_integers_are_written_exactly(tmp_path):
    extremes = np.array([[np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max, 10]])
    path = write_count_matrix(tmp_path / "x.csv.gz", sp.csr_array(extremes), GENES, ["c"])
    with gzip.open(path, "rt") as f:
        rows = f.read().splitlines()[1:]
    assert [row.split(",")[1] for row in rows] == [str(v) for v in extremes[0]]


def test_output_is_deterministic_at_every_level(tmp_path):
    counts = random_counts(30, 5)
    barcodes = [f"C{i}" for i in range(30)]
    for level in (0, 1, 6, 9):
        first = write_count_matrix(
            tmp_path / "a.csv.gz", counts, GENES, barcodes, compresslevel=level
        )
        data = first.read_bytes()
        second = write_count_matrix(
            tmp_path / "b.csv.gz", counts, GENES, barcodes, compresslevel=level
        )
        assert second.read_bytes() == data  # no file name or time in the gzip header
        assert_round_trip(second, counts, GENES, barcodes)


@pytest.mark.parametrize(
    ("counts", "genes", "barcodes", "error", "match"),
    [
        (sp.csr_array(np.full((3, 5), 0.5)), GENES, BARCODES, ValueError, "not integers"),
        (sp.csr_array(np.full((3, 5), np.nan)), GENES, BARCODES, ValueError, "NaN"),
        (sp.csr_array(np.full((3, 5), 1e19)), GENES, BARCODES, ValueError, "too large"),
        (sp.csr_array(np.ones((3, 5), bool)), GENES, BARCODES, TypeError, "integers"),
        (sp.csr_array(np.ones((3, 5))), GENES[:4], BARCODES, ValueError, "4 genes"),
        (sp.csr_array(np.ones((3, 5))), GENES, BARCODES[:2], ValueError, "2 barcodes"),
        (sp.csr_array(np.ones((3, 5))), ["A,B", *GENES[1:]], BARCODES, ValueError, "comma"),
        (sp.csr_array(np.ones((3, 5))), GENES, ['"x"', *BARCODES[1:]], ValueError, "quote"),
        (sp.csr_array(np.ones((3, 5))), GENES, ["a\nb", *BARCODES[1:]], ValueError, "line"),
        (sp.csr_array(np.ones((3, 5))), [1, 2, 3, 4, 5], BARCODES, TypeError, "strings"),
        (sp.csr_array(np.ones((3, 5))), None, BARCODES, TypeError, "required"),
        (np.ones(5), GENES, BARCODES, ValueError, "2-D"),
    ],
)
def test_rejects_what_cannot_be_written_exactly(tmp_path, counts, genes, barcodes, error, match):
    with pytest.raises(error, match=match):
        write_count_matrix(tmp_path / "x.csv.gz", counts, genes, barcodes)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file


def test_rejects_an_unknown_compression_level(tmp_path):
    with pytest.raises(ValueError, match="compresslevel"):
        write_count_matrix(
            tmp_path / "x.csv.gz", random_counts(3, 5), GENES, BARCODES, compresslevel=10
        )


def test_creates_the_folder_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "new" / "folder" / "x.csv.gz"
    write_count_matrix(target, random_counts(3, 5), GENES, BARCODES)
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.csv.gz"]


def test_a_failure_while_writing_keeps_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "x.csv.gz"
    write_count_matrix(target, random_counts(3, 5), GENES, BARCODES)
    previous = target.read_bytes()
    temp_files_seen = []

    def failing_kernel(*args):
        # The header is already in a hidden temp file next to the target when this runs.
        temp_files_seen.extend(p.name for p in tmp_path.glob(".x.csv.gz.*.tmp"))
        raise RuntimeError("disk full")

    monkeypatch.setattr(count_matrix_writer, "_format_rows", failing_kernel)
    with pytest.raises(RuntimeError, match="disk full"):
        write_count_matrix(target, random_counts(3, 5, seed=1), GENES, BARCODES)
    assert len(temp_files_seen) == 1
    assert target.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv.gz"]


def test_replaces_an_existing_file(tmp_path):
    target = tmp_path / "x.csv.gz"
    target.write_bytes(b"old")
    counts = random_counts(3, 5, seed=2)
    write_count_matrix(target, counts, GENES, BARCODES)
    assert_round_trip(target, counts, GENES, BARCODES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv.gz"]


LAYOUTS = [
    pytest.param(
        sep, compress, orientation, id=f"{name}-{'gz' if compress else 'plain'}-{orientation}"
    )
    for sep, name in ((",", "csv"), ("\t", "tsv"))
    for compress in (True, False)
    for orientation in ("genes_x_cells", "cells_x_genes")
]


@pytest.mark.parametrize(("sep", "compress", "orientation"), LAYOUTS)
def test_every_layout_round_trips_through_pandas(tmp_path, sep, compress, orientation):
    counts = random_counts(40, 5, seed=4)
    barcodes = [f"BC{i:03d}-1" for i in range(40)]
    path = write_count_matrix(
        tmp_path / "x.txt",
        counts,
        GENES,
        barcodes,
        sep=sep,
        compress=compress,
        orientation=orientation,
    )
    raw = path.read_bytes()
    assert raw.startswith(b"\x1f\x8b") == compress
    text = gzip.decompress(raw) if compress else raw
    header = text.split(b"\n", 1)[0].decode().split(sep)
    frame = pd.read_csv(path, sep=sep, index_col=0, compression="gzip" if compress else None)
    assert all(dtype.kind == "i" for dtype in frame.dtypes)
    if orientation == "genes_x_cells":
        assert header == ["", *barcodes]
        assert list(frame.index) == GENES
        assert np.array_equal(frame.to_numpy(), counts.toarray().T)
    else:  # pandas renames repeated column names: the header is checked on the text
        assert header == ["", *GENES]
        assert list(frame.index) == barcodes
        assert np.array_equal(frame.to_numpy(), counts.toarray())


def test_writes_the_exact_tsv_cells_x_genes_layout(tmp_path):
    counts = sp.csr_array(np.array([[0, 3, 0, 1, 12], [0, 0, 0, 0, 0], [7, 0, 0, 0, 100]]))
    path = write_count_matrix(
        tmp_path / "x.tsv",
        counts,
        GENES,
        BARCODES,
        sep="\t",
        compress=False,
        orientation="cells_x_genes",
    )
    assert path.read_bytes() == (
        b"\tMIR1302-2HG\tTBCE\tCD3E\tTBCE\tMT-CO1\n"
        b"AAACCCACAAGCGATG-1\t0\t3\t0\t1\t12\n"
        b"AAACCCACATCGGTTA-1\t0\t0\t0\t0\t0\n"
        b"AAACCCAGTACAGAAT-1\t7\t0\t0\t0\t100\n"
    )


def test_the_separator_decides_which_names_can_be_written(tmp_path):
    counts = sp.csr_array(np.ones((3, 5)))
    with_comma = ["A,B", *GENES[1:]]
    path = write_count_matrix(tmp_path / "x.tsv.gz", counts, with_comma, BARCODES, sep="\t")
    assert list(pd.read_csv(path, sep="\t", index_col=0).index) == with_comma
    with pytest.raises(ValueError, match="contains a tab"):
        write_count_matrix(tmp_path / "y.tsv", counts, ["A\tB", *GENES[1:]], BARCODES, sep="\t")
    with pytest.raises(ValueError, match="contains a comma"):
        write_count_matrix(tmp_path / "y.csv", counts, with_comma, BARCODES)


@pytest.mark.parametrize(
    ("options", "match"),
    [({"sep": ";"}, "sep must be"), ({"orientation": "cells_by_genes"}, "orientation must be")],
)
def test_rejects_an_unknown_layout(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        write_count_matrix(tmp_path / "x.csv", random_counts(3, 5), GENES, BARCODES, **options)
    assert list(tmp_path.iterdir()) == []
