"""The Cell Ranger HDF5 reader: real files read as scanpy reads them; malformed, a clear error."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from sc_assets.core.errors import CountMatrixError
from sc_assets.core.qc import csr_sums
from sc_assets.core.readers import (
    _hdf5_datasets,
    detect_layout,
    read_count_matrix,
    read_gene_names,
    tenx_h5,
)
from sc_assets.core.readers import h5ad as h5ad_reader
from sc_assets.core.readers._source import ReadOptions, read_head
from sc_assets.core.samples import SampleSpec
from sc_assets.core.tenx_writers import write_10x_h5

# The shared fixtures sit next to the checkout (../shared); SC_ASSETS_10X_FIXTURES overrides.
FIXTURES = Path(
    os.environ.get("SC_ASSETS_10X_FIXTURES")
    or Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "10x"
)
V3 = FIXTURES / "v3" / "filtered_feature_bc_matrix.h5"
V2 = FIXTURES / "v2" / "filtered_gene_bc_matrices_h5.h5"
TWO_GENOMES = FIXTURES / "v2" / "multiple_genomes.h5"
# scanpy reads duplicated gene names before the comparisons make them unique.
pytestmark = pytest.mark.filterwarnings("ignore:Variable names are not unique")
real_files = pytest.mark.skipif(
    not V3.is_file(), reason=f"real 10x fixtures not found at {FIXTURES}"
)

BARCODES = [f"AAAC{i:04d}-1" for i in range(7)]
GENES = ["CD3E", "MT-CO1", "ACTB", "TBCE", "TBCE", "MT-ND1"]
IDS = [f"ENSG{i:05d}" for i in range(len(GENES))]


def counts(seed: int = 0, shape: tuple[int, int] = (7, 6)) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.poisson(1.0, shape) * (rng.random(shape) < 0.6)
    dense[1] = 0  # a cell without counts
    return sp.csr_matrix(dense.astype(np.int64))


def write(path: Path, X=None, **kwargs) -> Path:
    X = counts() if X is None else X
    default = BARCODES if X.shape[0] <= len(BARCODES) else [f"B{i}-1" for i in range(X.shape[0])]
    barcodes = kwargs.pop("barcodes", default[: X.shape[0]])
    write_10x_h5(path, X, barcodes, IDS[: X.shape[1]], GENES[: X.shape[1]], **kwargs)
    return path


def assert_same_as_scanpy(adata: ad.AnnData, path: Path, genome: str | None = None) -> None:
    expected = sc.read_10x_h5(path, genome=genome)
    expected.var_names_make_unique()
    assert adata.X.dtype == np.float32 and adata.X.indices.dtype == np.int32
    assert adata.X.has_canonical_format
    assert (adata.X != expected.X).nnz == 0
    assert np.array_equal(adata.X.toarray(), expected.X.toarray())
    assert (adata.layers["counts"] != expected.X).nnz == 0
    assert adata.layers["counts"].data is not adata.X.data
    assert list(adata.obs_names) == list(expected.obs_names)
    assert list(adata.var_names) == list(expected.var_names)
    assert list(adata.var["gene_ids"]) == list(expected.var["gene_ids"])


def assert_qc_as_the_contract_computes(adata: ad.AnnData) -> None:
    """The QC columns are those of X itself (after any genome or feature type is left out)."""
    sums = csr_sums(adata.X, adata.var["mt"].to_numpy())
    assert np.array_equal(adata.obs["total_counts"], sums.cell_total.astype(np.float32))
    assert np.array_equal(adata.obs["n_genes_by_counts"], sums.cell_nnz)
    assert np.array_equal(adata.obs["total_counts_mt"], sums.cell_flagged_total)
    assert np.array_equal(adata.var["n_cells_by_counts"], sums.gene_nnz)
    assert np.array_equal(adata.var["total_counts"], sums.gene_total.astype(np.float32))


# --- real Cell Ranger files ----------------------------------------------------------------


@real_files
def test_cell_ranger_3_file_equals_scanpy() -> None:
    adata = read_count_matrix(V3)
    assert adata.shape == (1107, 507)
    assert adata.X.nnz == 23866
    assert_same_as_scanpy(adata, V3)
    assert set(adata.var["feature_types"]) == {"Gene Expression"}
    assert set(adata.var["genome"]) == {"GRCh38_chr21"}
    assert adata.uns["sc_assets"]["layout"] == "10x_h5"
    assert_qc_as_the_contract_computes(adata)


@real_files
def test_cell_ranger_2_file_equals_scanpy() -> None:
    adata = read_count_matrix(V2)
    assert adata.shape == (12, 343)
    assert_same_as_scanpy(adata, V2)
    assert "feature_types" not in adata.var
    assert_qc_as_the_contract_computes(adata)


@real_files
@pytest.mark.parametrize("genome", ["hg19_chr21", "another_genome"])
def test_cell_ranger_2_genome_is_picked_by_name(genome: str) -> None:
    adata = read_count_matrix(TWO_GENOMES, genome=genome)
    assert_same_as_scanpy(adata, TWO_GENOMES, genome=genome)


@real_files
def test_several_genomes_without_a_choice_name_them_and_the_samplesheet_column() -> None:
    with pytest.raises(CountMatrixError) as raised:
        read_count_matrix(TWO_GENOMES)
    message = str(raised.value)
    assert str(TWO_GENOMES) in message
    assert "2 genomes (another_genome, hg19_chr21)" in message
    assert "add a genome column to the samplesheet" in message


@real_files
def test_an_unknown_genome_lists_the_genomes_there_are() -> None:
    with pytest.raises(
        CountMatrixError, match=r"no genome 'mm10': its genomes are another_genome, hg19_chr21"
    ):
        read_count_matrix(TWO_GENOMES, genome="mm10")


@real_files
def test_detected_by_content_not_by_name(tmp_path: Path) -> None:
    renamed = tmp_path / "counts.data"
    renamed.write_bytes(V3.read_bytes())
    assert detect_layout(renamed).detail == "a Cell Ranger 3 HDF5 file"
    assert detect_layout(V2).detail == "a Cell Ranger 1-2 HDF5 file (genomes: hg19_chr21)"
    assert h5ad_reader.detect(V3, read_head(V3)) is None


@real_files
def test_gene_names_without_the_matrix() -> None:
    spec = SampleSpec("s1", V3)
    assert read_gene_names(spec) == list(sc.read_10x_h5(V3).var_names)
    two = SampleSpec("s2", TWO_GENOMES, genome="another_genome")
    assert len(read_gene_names(two)) == 343


# --- the writer ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
def test_written_files_read_back_in_scanpy_identically(tmp_path: Path, version: int) -> None:
    X = counts()
    path = write(tmp_path / "m.h5", X, version=version)
    expected = sc.read_10x_h5(path)
    assert np.array_equal(expected.X.toarray(), X.toarray())
    assert list(expected.obs_names) == BARCODES
    assert list(expected.var_names) == GENES
    assert list(expected.var["gene_ids"]) == IDS
    adata = read_count_matrix(path)
    assert_same_as_scanpy(adata, path)
    assert_qc_as_the_contract_computes(adata)
    assert list(adata.var_names) == ["CD3E", "MT-CO1", "ACTB", "TBCE", "TBCE-1", "MT-ND1"]
    assert adata.obs["total_counts_mt"].sum() == X[:, [1, 5]].sum()


def test_the_writer_stores_what_cell_ranger_stores(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5")
    with h5py.File(path) as f:
        assert f.attrs["filetype"] == "matrix"
        matrix = f["matrix"]
        assert matrix["data"].dtype == np.int32 and matrix["indices"].dtype == np.int64
        assert matrix["data"].compression == "gzip" and matrix["data"].shuffle
        assert matrix["data"].chunks == (80_000,)
        assert list(matrix["shape"][()]) == [6, 7]
        assert matrix["features/_all_tag_keys"][()].tolist() == [b"genome"]
        assert set(matrix["features/genome"][()].tolist()) == {b"GRCh38"}


# --- feature types and genomes -----------------------------------------------------------------


def test_antibodies_go_to_obsm_and_other_types_are_dropped_by_name(tmp_path: Path) -> None:
    X = sp.csr_matrix(np.array([[1, 0, 5, 7, 1, 2], [0, 2, 0, 3, 0, 0], [4, 0, 1, 0, 9, 0]]))
    types = ["Gene Expression", "Antibody Capture", "Gene Expression", "Antibody Capture"]
    types += ["CRISPR Guide Capture", "Gene Expression"]
    path = tmp_path / "multi.h5"
    write_10x_h5(
        path,
        X,
        BARCODES[:3],
        IDS,
        ["G1", "CD4_TotalSeqB", "G2", "CD8", "sgRNA1", "MT-X"],
        feature_types=types,
    )
    adata = read_count_matrix(path)
    assert list(adata.var_names) == ["G1", "G2", "MT-X"]
    assert np.array_equal(adata.X.toarray(), X.toarray()[:, [0, 2, 5]])
    protein = adata.obsm["protein_expression"]
    assert list(protein.columns) == ["CD4_TotalSeqB", "CD8"]
    assert list(protein.index) == BARCODES[:3]
    assert protein.to_numpy().tolist() == [[0, 7], [2, 3], [0, 0]]
    assert adata.uns["sc_assets"]["dropped_feature_types"] == {"CRISPR Guide Capture": 1}
    assert adata.obs["total_counts"].tolist() == [8, 0, 5]
    assert adata.obs["total_counts_mt"].tolist() == [2, 0, 0]
    names = tenx_h5.read_gene_names(detect_layout(path), ReadOptions())
    assert names == ["G1", "G2", "MT-X"]


def test_cell_ranger_3_genomes_kept_together_or_picked(tmp_path: Path) -> None:
    X = counts()
    genomes = ["GRCh38", "GRCh38", "mm10", "mm10", "GRCh38", "mm10"]
    path = write(tmp_path / "barnyard.h5", X, genome=genomes)
    both = read_count_matrix(path)
    assert_same_as_scanpy(both, path)
    assert list(both.var["genome"]) == genomes
    mouse = read_count_matrix(path, genome="mm10")
    assert_same_as_scanpy(mouse, path, genome="mm10")
    assert list(mouse.var_names) == ["ACTB", "TBCE", "MT-ND1"]
    assert mouse.uns["sc_assets"]["genome"] == "mm10"
    assert_qc_as_the_contract_computes(mouse)
    with pytest.raises(CountMatrixError, match="no genome 'hg19': its genomes are GRCh38, mm10"):
        read_count_matrix(path, genome="hg19")


def test_a_single_genome_named_as_it_is_reads_everything(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5")
    assert read_count_matrix(path, genome="GRCh38").shape == (7, 6)


# --- how the arrays are read: every storage, the same values -----------------------------------


@pytest.mark.parametrize(
    "storage",
    [
        {"compression": "gzip", "shuffle": True, "chunks": (7,)},
        {"compression": "gzip", "chunks": (5,)},
        {"shuffle": True, "chunks": (4,)},
        {"chunks": (6,)},
        {"compression": "lzf", "chunks": (9,)},
        {},
    ],
    ids=["gzip+shuffle", "gzip", "shuffle", "chunked", "lzf", "contiguous"],
)
@pytest.mark.parametrize("dtype", ["<i8", "<i4", ">i8", "<u2", "<f8", "<f4"])
@pytest.mark.parametrize("parallel", [True, False])
def test_any_storage_of_the_arrays_reads_the_same(
    tmp_path: Path, storage: dict, dtype: str, parallel: bool
) -> None:
    values = np.array([3, 0, 17, 2**16 - 1, 5, 1, 1, 200, 9, 0, 4, 65535, 12, 8, 2, 6, 7, 3, 1])
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("v", data=values.astype(dtype), **storage)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        dataset = f["v"]
        for out_dtype in (np.float32, np.int32):
            out, copy = np.full(values.size, -1, out_dtype), np.full(values.size, -1, out_dtype)
            pool = _hdf5_datasets.reading_pool() if parallel else contextlib.nullcontext()
            with pool as workers:
                found = _hdf5_datasets.reader(dataset)(out, workers, copy)
            assert out.tolist() == copy.tolist() == values.tolist()
            assert (found.low, found.high, found.whole) == (0, 65535, True)


@pytest.mark.parametrize(
    ("values", "counts"),
    [
        (np.array([0, 3, 2**30], np.float32), True),
        (np.array([-0.0, 1e20], np.float32), True),  # float32 holds only whole numbers from 2**24
        (np.array([3, 2.5], np.float32), False),
        (np.array([3, np.nan], np.float32), False),
        (np.array([np.nan, 3], np.float64), False),
        (np.array([3, np.inf], np.float32), False),
        (np.array([3, -1], np.float64), False),
        (np.array([1, 2**51 + 0.5], np.float64), False),
        (np.array([1, 4], ">f8"), True),
        (np.array([1, 4.5], np.float16), False),
    ],
)
def test_stored_values_are_counts_if_whole_finite_and_not_negative(values, counts: bool) -> None:
    found = _hdf5_datasets.ValueRange.of(values)
    assert found.counts is counts
    if np.isfinite(values).all():
        assert (found.low, found.high) == (values.min(), values.max())


def test_indices_above_2_to_the_32_are_not_taken_for_small_ones(tmp_path: Path) -> None:
    # Stored as int64 with shuffle: the four upper byte planes are not zero.
    path = write(tmp_path / "m.h5")
    with h5py.File(path, "r+") as f:
        indices = f["matrix/indices"][()]
        indices[2] = 2**32 + int(indices[2])
        del f["matrix/indices"]
        f["matrix"].create_dataset(
            "indices",
            data=indices,
            chunks=(80_000,),
            maxshape=(None,),
            compression="gzip",
            shuffle=True,
        )
    message = r"entry 3 \(cell AAAC\d{4}-1\): index 4294967\d+ is out of range \(6 columns\)"
    with pytest.raises(CountMatrixError, match=message):
        read_count_matrix(path)


# --- malformed files ---------------------------------------------------------------------------


def replace(path: Path, name: str, values: np.ndarray) -> None:
    with h5py.File(path, "r+") as f:
        del f[name]
        f.create_dataset(name, data=values)


def matrix_of(path: Path, name: str) -> np.ndarray:
    with h5py.File(path) as f:
        return f[f"matrix/{name}"][()]


def raises(path: Path, *phrases: str) -> str:
    with pytest.raises(CountMatrixError) as raised:
        read_count_matrix(path)
    message = str(raised.value)
    assert message.startswith(str(path))
    for phrase in phrases:
        assert phrase in message
    return message


def test_a_negative_count_names_its_entry_and_cell(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5")
    data = matrix_of(path, "data")
    data[4] = -3
    replace(path, "matrix/data", data)
    cell = int(np.searchsorted(matrix_of(path, "indptr"), 4, side="right")) - 1
    gene = GENES[matrix_of(path, "indices")[4]]
    raises(path, f"entry 5 (cell {BARCODES[cell]}, feature {gene}): count -3 is negative")


def test_a_count_that_is_not_whole_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5")
    data = matrix_of(path, "data").astype(np.float64)
    data[0] = 2.5
    replace(path, "matrix/data", data)
    raises(path, "entry 1 (cell AAAC0000-1", "count 2.5 is not a whole number")


def test_float_counts_that_are_whole_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5")
    replace(path, "matrix/data", matrix_of(path, "data").astype(np.float64))
    assert np.array_equal(read_count_matrix(path).X.toarray(), counts().toarray())


def test_nan_is_no_count(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5")
    data = matrix_of(path, "data").astype(np.float32)
    data[2] = np.nan
    replace(path, "matrix/data", data)
    raises(path, "entry 3 (", "count nan is not a number of counts")


def test_an_index_out_of_range_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5")
    indices = matrix_of(path, "indices")
    indices[-1] = 6
    replace(path, "matrix/indices", indices)
    raises(path, f"entry {indices.size:,} (cell AAAC0006-1): index 6 is out of range (6 columns)")


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        (lambda p: p[:-1], "/matrix/indptr holds 7 offsets, expected 8 (shape)"),
        (lambda p: p + 1, "/matrix/indptr starts at 1, not 0"),
        (
            lambda p: np.concatenate([p[:3], [p[2] - 1], p[4:]]),
            "/matrix/indptr decreases at offset 4",
        ),
        (lambda p: np.concatenate([p[:-1], [p[-1] - 1]]), "/matrix/indptr ends at"),
        (lambda p: p.astype(np.float64), "holds float64 values, not integers"),
    ],
    ids=["short", "not_from_0", "decreasing", "wrong_end", "floats"],
)
def test_a_broken_indptr_is_named(tmp_path: Path, change, phrase: str) -> None:
    path = write(tmp_path / "m.h5")
    replace(path, "matrix/indptr", change(matrix_of(path, "indptr")))
    raises(path, phrase)


def test_data_and_indices_of_different_lengths(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5")
    replace(path, "matrix/data", matrix_of(path, "data")[:-1])
    raises(path, "/matrix/data holds", "but /matrix/indices")


def test_shape_against_barcodes_and_features(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5")
    replace(path, "matrix/barcodes", np.array([b.encode() for b in BARCODES[:-1]]))
    raises(path, "6 barcodes, but /matrix/shape says 7")
    path = write(tmp_path / "m2.h5")
    replace(path, "matrix/shape", np.array([7, 7], np.int32))
    raises(path, "6 features, but /matrix/shape says 7")


def test_genes_out_of_order_in_a_cell_are_sorted(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5")
    indptr, indices = matrix_of(path, "indptr"), matrix_of(path, "indices")
    data = matrix_of(path, "data")
    for cell in range(len(BARCODES)):  # every cell's genes backwards
        part = slice(indptr[cell], indptr[cell + 1])
        indices[part], data[part] = indices[part][::-1], data[part][::-1]
    replace(path, "matrix/indices", indices)
    replace(path, "matrix/data", data)
    adata = read_count_matrix(path)
    assert adata.X.has_sorted_indices
    assert np.array_equal(adata.X.toarray(), counts().toarray())
    assert np.array_equal(adata.layers["counts"].toarray(), counts().toarray())
    assert adata.layers["counts"].data is not adata.X.data
    assert_qc_as_the_contract_computes(adata)


def test_a_gene_twice_in_a_cell_names_both_entries(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5")
    indptr, indices = matrix_of(path, "indptr"), matrix_of(path, "indices")
    cell = int(np.argmax(np.diff(indptr) >= 2))
    first = int(indptr[cell])
    indices[first + 1] = indices[first]
    replace(path, "matrix/indices", indices)
    gene = GENES[indices[first]]
    raises(
        path,
        f"entries {first + 1} and {first + 2} (cell {BARCODES[cell]}, feature {gene}): "
        "the same feature twice in one cell",
    )


def test_a_repeated_barcode_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5", barcodes=[*BARCODES[:6], BARCODES[0]])
    raises(path, f"barcode '{BARCODES[0]}' appears twice (cells 1 and 7)")


def test_a_truncated_file_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "m.h5", counts(shape=(300, 6)))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = raises(truncated, "truncated or damaged")
    assert "HDF5" in message


def test_a_damaged_chunk_says_so(tmp_path: Path) -> None:
    X = counts(shape=(400, 6))
    path = write(tmp_path / "m.h5", X)
    with h5py.File(path) as f:
        address = f["matrix/indices"].id.get_chunk_info(0).byte_offset
    content = bytearray(path.read_bytes())
    content[address + 20 : address + 60] = bytes(40)  # zeros in the middle of the deflate stream
    path.write_bytes(bytes(content))
    raises(path, "cannot be read: truncated or damaged?")


def test_other_hdf5_files_are_not_taken(tmp_path: Path) -> None:
    loom = tmp_path / "x.loom"
    with h5py.File(loom, "w") as f:
        f["matrix"] = np.zeros((2, 2))
        f.create_group("row_attrs")
        f.create_group("col_attrs")
    assert tenx_h5.detect(loom, read_head(loom)) is None
    h5ad = tmp_path / "x.h5ad"
    ad.AnnData(np.ones((2, 2), np.float32)).write_h5ad(h5ad)
    assert tenx_h5.detect(h5ad, read_head(h5ad)) is None
    text = tmp_path / "x.h5"
    text.write_text("gene,AAAC-1\nG1,1\n")
    assert tenx_h5.detect(text, read_head(text)) is None
    assert tenx_h5.detect(tmp_path, b"") is None


def test_sums_beyond_float32_precision_are_exact(tmp_path: Path) -> None:
    # Five counts of 8,000,001 (each exact in float32) add up to more than 2**24: the totals
    # are the exact sums rounded once to float32 (float32 additions would give 40,000,004).
    X = sp.csr_matrix(np.array([[8_000_001] * 5 + [1], [3, 0, 0, 0, 0, 8_000_001]]))
    adata = read_count_matrix(write(tmp_path / "big.h5", X, barcodes=BARCODES[:2]))
    assert adata.obs["total_counts"].tolist() == [40_000_008, 8_000_004]
    assert adata.var["total_counts"].tolist() == [8_000_004, *[8_000_001] * 4, 8_000_002]
    assert_qc_as_the_contract_computes(adata)


def test_chunks_stored_apart_are_read_in_order(tmp_path: Path) -> None:
    # Two datasets grown in turns: their chunks alternate in the file, as appends leave them.
    values = np.arange(40, dtype=np.int32) * 3
    with h5py.File(tmp_path / "a.h5", "w") as f:
        grown = [f.create_dataset(n, (0,), np.int32, chunks=(4,), maxshape=(None,)) for n in "ab"]
        for start in range(0, 40, 4):
            for dataset in grown:
                dataset.resize((start + 4,))
                dataset[start : start + 4] = values[start : start + 4]
                f.flush()
    with h5py.File(tmp_path / "a.h5", "r") as f:
        runs = _hdf5_datasets._stored_runs(f["a"])
        assert runs is not None and len(runs) > 1
        out = np.zeros(40, np.float32)
        with _hdf5_datasets.reading_pool() as pool:
            _hdf5_datasets.reader(f["a"])(out, pool, None)
        assert out.tolist() == values.tolist()
