"""The text reader: CSV or TSV, gzipped or not, genes x cells or cells x genes."""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sc_assets.core.count_matrix_writer import write_count_matrix
from sc_assets.core.errors import CountMatrixError
from sc_assets.core.genes import unique_gene_names
from sc_assets.core.readers import (
    ReadOptions,
    detect_layout,
    read_count_matrix,
    read_gene_names,
    read_sample,
    text,
)
from sc_assets.core.readers._contract import CountData, Features, counts_adata
from sc_assets.core.readers._source import read_head
from sc_assets.core.samples import SampleSpec

GENES = ["MT-CO1", "ACTB", "ACTB", "CD3E", "MT-ND1", "MIR1302-2HG"]
BARCODES = [f"AAAC{i:02d}-1" for i in range(9)]

LAYOUTS = [
    pytest.param(sep, compress, orientation, id=f"{name}-{'gz' if compress else 'plain'}-{orient}")
    for sep, name in ((",", "csv"), ("\t", "tsv"))
    for compress in (True, False)
    for orientation, orient in (("genes_x_cells", "gxc"), ("cells_x_genes", "cxg"))
]


def counts_matrix(seed: int = 0) -> np.ndarray:
    """Cells x genes counts, with a wide one, an empty cell and an empty gene."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 4, (len(BARCODES), len(GENES))) * (rng.random((9, 6)) < 0.5)
    counts[0, 0] = 20_000_000  # above 2**24 (a float32 still holds it)
    counts[3] = 0
    counts[:, 5] = 0
    return counts


def write(tmp_path: Path, sep: str, compress: bool, orientation: str, name: str = "m") -> Path:
    suffix = (".tsv" if sep == "\t" else ".csv") + (".gz" if compress else "")
    return write_count_matrix(
        tmp_path / f"{name}{suffix}",
        sp.csr_matrix(counts_matrix()),
        GENES,
        BARCODES,
        sep=sep,
        compress=compress,
        orientation=orientation,
    )


def detect(path: Path):
    return text.detect(path, read_head(path))


@pytest.mark.parametrize(("sep", "compress", "orientation"), LAYOUTS)
def test_every_layout_reads_the_matrix_written(tmp_path, sep, compress, orientation) -> None:
    path = write(tmp_path, sep, compress, orientation)
    source = detect_layout(path)
    layout = "tsv" if sep == "\t" else "csv"
    assert (source.layout, source.extra["sep"], source.files) == (layout, sep, {"matrix": path})
    assert source.detail == f"{'a gzipped' if compress else 'an uncompressed'} {layout.upper()}" + (
        " count matrix"
    )

    adata = read_count_matrix(path, orientation=orientation)
    counts = counts_matrix()
    X = adata.X
    assert sp.isspmatrix_csr(X) and X.has_canonical_format
    assert (X.dtype, X.indices.dtype, X.indptr.dtype) == (np.float32, np.int32, np.int32)
    assert np.array_equal(X.toarray(), counts.astype(np.float32))
    assert np.array_equal(adata.layers["counts"].toarray(), X.toarray())
    assert not np.shares_memory(adata.layers["counts"].data, X.data)
    assert list(adata.obs_names) == BARCODES
    assert list(adata.var_names) == unique_gene_names(GENES)
    assert adata.var["mt"].tolist() == [True, False, False, False, True, False]
    expected_mt = counts[:, [0, 4]].sum(axis=1).astype(np.float32)
    assert np.array_equal(adata.obs["total_counts_mt"], expected_mt)
    assert adata.uns["sc_assets"]["layout"] == layout

    # The parser's sums give what the matrix alone gives (core.qc.csr_sums).
    data = CountData(path, layout, BARCODES, Features(GENES), X.copy())
    reference = counts_adata(data)
    pd.testing.assert_frame_equal(adata.obs, reference.obs)
    pd.testing.assert_frame_equal(adata.var, reference.var)


@pytest.mark.parametrize(("sep", "compress", "orientation"), LAYOUTS)
def test_gene_names_equal_the_readers(tmp_path, sep, compress, orientation) -> None:
    path = write(tmp_path, sep, compress, orientation)
    source = detect_layout(path)
    assert text.read_gene_names(source, ReadOptions(orientation=orientation)) == GENES
    spec = SampleSpec(sample="s1", path=path, orientation=orientation)
    assert read_gene_names(spec) == list(read_sample(spec).var_names)


def test_a_source_without_a_separator_uses_the_layouts(tmp_path) -> None:
    path = write(tmp_path, "\t", False, "genes_x_cells")
    source = replace(detect(path), extra={})
    assert text.read(source, ReadOptions()).features.names == GENES


def test_cells_x_genes_with_a_repeated_barcode_names_its_line(tmp_path) -> None:
    path = tmp_path / "d.tsv.gz"
    path.write_bytes(gzip.compress(b"\tG1\tG1\nAAAC\t1\t0\nCCCG\t0\t1\nAAAC\t2\t2\n"))
    with pytest.raises(CountMatrixError, match=r"d.tsv.gz, line 4, column 1: barcode 'AAAC'"):
        read_count_matrix(path, orientation="cells_x_genes")


def test_a_cells_x_genes_file_read_as_genes_x_cells_names_the_problem(tmp_path) -> None:
    """Repeated genes in the header are repeated barcodes for a genes x cells read."""
    path = write(tmp_path, ",", True, "cells_x_genes")
    with pytest.raises(CountMatrixError, match="line 1, column 4: cell barcode 'ACTB' appears"):
        read_count_matrix(path)


def test_the_format_can_be_insisted_on(tmp_path) -> None:
    path = write(tmp_path, "\t", True, "genes_x_cells")
    assert detect_layout(path, "tsv").layout == "tsv"
    with pytest.raises(CountMatrixError, match=r"given as csv, but this is a gzipped TSV"):
        detect_layout(path, "csv")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\xef\xbb\xbf,A,B\nG,1,0\n", id="bom"),
        pytest.param(b'"","A","B"\r\n"G",1,0\r\n', id="quoted-crlf"),
        pytest.param(b"gene\tA\nG\t1\n", id="one-cell-tsv"),
        pytest.param(b"," + b",".join(b"AAAC-%d" % i for i in range(2000)) + b"\n", id="long"),
        pytest.param(b"\t\xc3\xa9\xc3\xa9\tB\nG\t1\t0\n", id="utf8"),
        pytest.param(b",A\xe9,B\nG,1,0\n", id="latin1"),  # the parser names the bad byte
    ],
)
@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_detect_claims_text_with_a_separated_header(tmp_path, content, compress) -> None:
    path = tmp_path / "x"
    path.write_bytes(gzip.compress(content) if compress else content)
    source = detect(path)
    assert source is not None
    assert source.layout == ("tsv" if b"gene\t" in content or content[:1] == b"\t" else "csv")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"%%MatrixMarket matrix coordinate integer general\n3 2 1\n1 1 5\n", id="mtx"),
        pytest.param(b"\xef\xbb\xbf%%MatrixMarket matrix coordinate real general\n", id="mtx-bom"),
        pytest.param(b"AAAC-1\nAAAC-2\n", id="one-column"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x89HDF\r\n\x1a\n" + bytes(100), id="hdf5"),
        pytest.param(b"PK\x03\x04" + bytes(100), id="zip"),
        pytest.param(b"X\n\x00\x00\x00\x03\x00\x04", id="rds"),
        pytest.param(bytes(range(256)), id="binary"),
        pytest.param(b",A,B\nG,1,\x00\x00\x00\n", id="nul-bytes"),
    ],
)
@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_detect_leaves_other_inputs_alone(tmp_path, content, compress) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(gzip.compress(content) if compress else content)
    assert detect(path) is None


def test_detect_leaves_folders_and_broken_gzip_alone(tmp_path) -> None:
    assert text.detect(tmp_path, b"") is None
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(200, 256)))
    assert detect(path) is None


def test_warm_up_is_exported() -> None:
    assert "warm_up" in text.__all__
    text.warm_up()
