"""The MTX reader: 10x folders (v3, v2, Cell Ranger 2 genomes), prefixed trios, STARsolo."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sc_assets.core.errors import CountMatrixError
from sc_assets.core.genes import unique_gene_names
from sc_assets.core.readers import ReadOptions, detect_layout, mtx, read_count_matrix, read_sample
from sc_assets.core.readers.mtx import find_trios
from sc_assets.core.samples import SampleSpec
from sc_assets.core.tenx_writers import write_10x_mtx

# The shared fixtures sit next to the checkout (../shared); SC_ASSETS_10X_FIXTURES overrides.
FIXTURES = Path(
    os.environ.get("SC_ASSETS_10X_FIXTURES")
    or Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "10x"
)
V3 = FIXTURES / "v3" / "filtered_feature_bc_matrix"
V2_PARENT = FIXTURES / "v2" / "filtered_gene_bc_matrices"
V2 = V2_PARENT / "hg19_chr21"
INT_IDS = FIXTURES / "int-ids"

BANNER = "%%MatrixMarket matrix coordinate integer general\n"


def needs(folder: Path):
    reason = f"real 10x fixture not found at {folder} (set SC_ASSETS_10X_FIXTURES)"
    return pytest.mark.skipif(not folder.is_dir(), reason=reason)


def assert_contract(adata, counts: np.ndarray, barcodes: list[str], names: list[str]) -> None:
    """``adata`` holds exactly ``counts`` (cells x genes) as the readers' contract says."""
    X = adata.X
    assert sp.isspmatrix_csr(X) and X.has_canonical_format
    assert (X.dtype, X.indices.dtype, X.indptr.dtype) == (np.float32, np.int32, np.int32)
    assert np.array_equal(X.toarray(), counts)
    counts_layer = adata.layers["counts"]
    assert np.array_equal(counts_layer.toarray(), counts)
    assert not np.shares_memory(counts_layer.data, X.data)
    assert not np.shares_memory(counts_layer.indices, X.indices)
    assert list(adata.obs_names) == barcodes
    assert list(adata.var_names) == unique_gene_names(names)
    assert np.array_equal(adata.obs["total_counts"], counts.sum(axis=1))
    mt = np.array([n.startswith("MT-") for n in names], dtype=bool)
    assert np.array_equal(adata.obs["total_counts_mt"], counts[:, mt].sum(axis=1))
    assert np.array_equal(adata.var["n_cells_by_counts"], (counts > 0).sum(axis=0))


def assert_same_as_scanpy(ours, folder: Path) -> None:
    theirs = sc.read_10x_mtx(folder)
    assert np.array_equal(ours.X.toarray(), theirs.X.toarray())
    assert list(ours.obs_names) == list(theirs.obs_names)
    assert list(ours.var_names) == list(theirs.var_names)
    assert list(ours.var["gene_ids"]) == [str(i) for i in theirs.var["gene_ids"]]
    if "feature_types" in theirs.var:
        assert list(ours.var["feature_types"]) == list(theirs.var["feature_types"])


# --- real Cell Ranger files --------------------------------------------------------------


@needs(V3)
@pytest.mark.parametrize("entry", ["folder", "matrix file"])
def test_cell_ranger_3_folder_reads_as_scanpy_does(entry):
    path = V3 if entry == "folder" else V3 / "matrix.mtx.gz"
    source = detect_layout(path)
    assert (source.layout, source.detail) == ("10x_mtx", "a 10x MTX v3 folder")
    assert dict(source.files) == {
        "matrix": V3 / "matrix.mtx.gz",
        "features": V3 / "features.tsv.gz",
        "barcodes": V3 / "barcodes.tsv.gz",
    }
    adata = read_count_matrix(path)
    assert_same_as_scanpy(adata, V3)
    assert adata.uns["sc_assets"]["layout"] == "10x_mtx"


@needs(V2)
@pytest.mark.parametrize("entry", ["genome folder", "parent folder"])
def test_cell_ranger_2_folder_reads_as_scanpy_does(entry):
    path = V2 if entry == "genome folder" else V2_PARENT
    source = detect_layout(path)
    assert source.files["features"] == V2 / "genes.tsv"
    if entry == "parent folder":
        assert source.detail == "a Cell Ranger 2 MTX folder (genome hg19_chr21)"
    adata = read_count_matrix(path)
    assert_same_as_scanpy(adata, V2)
    assert "feature_types" not in adata.var


@needs(INT_IDS)
def test_integer_ids_and_real_field_read_as_scanpy_does(tmp_path):
    adata = read_count_matrix(INT_IDS)
    assert list(adata.var["gene_ids"])[:2] == ["574405", "574404"]  # strings, not numbers
    # scanpy reads a v3 folder only gzipped
    for name in ("matrix.mtx", "features.tsv", "barcodes.tsv"):
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress((INT_IDS / name).read_bytes()))
    assert_same_as_scanpy(adata, tmp_path)


# --- the writer ----------------------------------------------------------------------------


def small_sample(seed: int = 0, n_cells: int = 30, n_genes: int = 12):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.8, size=(n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < 0.4)
    barcodes = [f"CELL{i:03d}-1" for i in range(n_cells)]
    names = [f"G{i}" for i in range(n_genes - 3)] + ["G1", "MT-CO1", "MT-ND1"]
    ids = [f"ENSG{i:05d}" for i in range(n_genes)]
    return counts, barcodes, ids, names


@pytest.mark.parametrize("version", [3, 2])
def test_written_folder_reads_back_with_scanpy_and_ours(tmp_path, version):
    counts, barcodes, ids, names = small_sample()
    written = write_10x_mtx(tmp_path, sp.csr_matrix(counts), barcodes, ids, names, version=version)
    suffix = ".gz" if version == 3 else ""
    assert written["matrix"] == tmp_path / f"matrix.mtx{suffix}"
    assert written["features"].name == ("features.tsv.gz" if version == 3 else "genes.tsv")
    adata = read_count_matrix(tmp_path)
    assert_contract(adata, counts, barcodes, names)
    assert_same_as_scanpy(adata, tmp_path)


def test_writer_uses_cell_rangers_entry_order(tmp_path):
    counts, barcodes, ids, names = small_sample()
    write_10x_mtx(tmp_path, counts, barcodes, ids, names)
    lines = gzip.decompress((tmp_path / "matrix.mtx.gz").read_bytes()).decode().splitlines()
    assert lines[0] == BANNER.strip()
    assert lines[1].startswith("%metadata_json: ")
    entries = np.array([[int(v) for v in line.split()] for line in lines[3:]])
    keys = list(zip(entries[:, 1], -entries[:, 0], strict=True))  # by cell, genes descending
    assert keys == sorted(keys)


# --- STARsolo ------------------------------------------------------------------------------


@pytest.fixture
def star_output(tmp_path) -> Path:
    """A STAR output folder whose Solo.out/Gene holds filtered/ and raw/ (uncompressed)."""
    counts, barcodes, ids, names = small_sample(1)
    gene = tmp_path / "star" / "Solo.out" / "Gene"
    write_10x_mtx(gene / "filtered", counts, barcodes, ids, names, compress=False)
    write_10x_mtx(gene / "raw", counts[:5], barcodes[:5], ids, names, compress=False)
    return tmp_path / "star"


@pytest.mark.parametrize(
    "entry", ["", "Solo.out", "Solo.out/Gene", "Solo.out/Gene/filtered", "matrix file"]
)
def test_starsolo_from_every_entry_point(star_output, entry):
    filtered = star_output / "Solo.out" / "Gene" / "filtered"
    path = filtered / "matrix.mtx" if entry == "matrix file" else star_output / entry
    source = detect_layout(path)
    assert source.layout == "starsolo"
    assert source.detail == "a STARsolo Solo.out/Gene/filtered folder"
    assert source.path == path
    assert dict(source.files) == {
        "matrix": filtered / "matrix.mtx",
        "features": filtered / "features.tsv",
        "barcodes": filtered / "barcodes.tsv",
    }
    counts, barcodes, _, names = small_sample(1)
    adata = read_count_matrix(path, format="starsolo")
    assert_contract(adata, counts, barcodes, names)
    assert adata.uns["sc_assets"]["layout"] == "starsolo"


def test_starsolo_without_filtered_matrix_is_explained(tmp_path):
    (tmp_path / "Solo.out" / "Velocyto").mkdir(parents=True)
    with pytest.raises(CountMatrixError, match="STARsolo Solo.out folder without Gene"):
        detect_layout(tmp_path)


# --- prefixed trios --------------------------------------------------------------------------


@pytest.mark.parametrize("separator", ["_", "-", "."])
@pytest.mark.parametrize("version", [3, 2])
def test_prefixed_trio_by_file_and_by_folder(tmp_path, separator, version):
    counts, barcodes, ids, names = small_sample(2)
    prefix = f"GSM123{separator}"
    written = write_10x_mtx(tmp_path / prefix, counts, barcodes, ids, names, version=version)
    assert written["matrix"].name.startswith(prefix)
    for path in (written["matrix"], tmp_path):
        source = detect_layout(path)
        assert source.layout == "10x_mtx"
        assert source.detail == f"a prefixed MTX trio {prefix}..."
        assert source.path == path
        assert dict(source.files) == written
        assert_contract(read_count_matrix(path), counts, barcodes, names)
    assert find_trios(tmp_path) == {"GSM123": written["matrix"]}


def test_folder_of_several_trios_names_them(tmp_path):
    counts, barcodes, ids, names = small_sample()
    write_10x_mtx(tmp_path / "GSM1_", counts, barcodes, ids, names)
    write_10x_mtx(tmp_path, counts, barcodes, ids, names, version=2, prefix="GSM2-")
    (tmp_path / "GSM3_matrix.mtx.gz").write_bytes(b"")  # no siblings: not a trio
    assert find_trios(tmp_path) == {
        "GSM1": tmp_path / "GSM1_matrix.mtx.gz",
        "GSM2": tmp_path / "GSM2-matrix.mtx",
    }
    with pytest.raises(CountMatrixError, match="2 prefixed MTX trios") as error:
        detect_layout(tmp_path)
    assert "GSM1_matrix.mtx.gz, GSM2-matrix.mtx" in str(error.value)
    adata = read_count_matrix(tmp_path / "GSM2-matrix.mtx")
    assert_contract(adata, counts, barcodes, names)


# --- Cell Ranger 2 genomes -------------------------------------------------------------------


@pytest.fixture
def two_genomes(tmp_path) -> Path:
    for seed, genome in enumerate(("hg19", "mm10")):
        counts, barcodes, ids, names = small_sample(seed)
        write_10x_mtx(tmp_path / genome, counts, barcodes, ids, names, version=2)
    return tmp_path


def test_genome_picks_the_subfolder(two_genomes):
    source = detect_layout(two_genomes)
    assert source.detail == "a Cell Ranger 2 MTX folder with genomes hg19, mm10"
    assert source.files["mm10/matrix"] == two_genomes / "mm10" / "matrix.mtx"
    for seed, genome in enumerate(("hg19", "mm10")):
        counts, barcodes, _, names = small_sample(seed)
        assert_contract(read_count_matrix(two_genomes, genome=genome), counts, barcodes, names)
    spec = SampleSpec("s1", two_genomes, genome="mm10")
    assert read_sample(spec).uns["sc_assets"]["genome"] == "mm10"


def test_several_genomes_need_a_genome_column(two_genomes):
    with pytest.raises(CountMatrixError, match=r"genome \(hg19, mm10\): add a genome column"):
        read_count_matrix(two_genomes)
    with pytest.raises(CountMatrixError, match=r"no genome 'GRCh38'.*found: hg19, mm10"):
        read_count_matrix(two_genomes, genome="GRCh38")


# --- features --------------------------------------------------------------------------------


def test_gene_names_are_the_gene_expression_features(tmp_path):
    counts, barcodes, ids, names = small_sample()
    types = ["Gene Expression"] * (len(names) - 2) + ["Antibody Capture", "CRISPR Guide Capture"]
    write_10x_mtx(tmp_path, counts, barcodes, ids, names, feature_types=types)
    source = detect_layout(tmp_path)
    assert mtx.read_gene_names(source, ReadOptions()) == names[:-2]
    adata = read_count_matrix(tmp_path)
    assert list(adata.var_names) == unique_gene_names(names[:-2])
    assert list(adata.obsm["protein_expression"].columns) == [names[-2]]
    assert adata.uns["sc_assets"]["dropped_feature_types"] == {"CRISPR Guide Capture": 1}


def test_single_column_features_are_names(tmp_path):
    counts, barcodes, _, names = small_sample()
    write_trio(tmp_path, matrix_text(counts), names, barcodes)
    adata = read_count_matrix(tmp_path)
    assert_contract(adata, counts, barcodes, names)
    assert "gene_ids" not in adata.var


# --- every MTX variant, property-based ---------------------------------------------------------


def matrix_text(
    counts: np.ndarray,
    *,
    order: str = "cellranger",
    field: str = "integer",
    repeats: bool = False,
    comment: bool = True,
    rng: np.random.Generator | None = None,
) -> str:
    """``counts`` (cells x genes) as a genes x cells Matrix Market file, entries in ``order``."""
    rng = rng or np.random.default_rng(0)
    cells, genes = (a.tolist() for a in np.nonzero(counts))
    entries = [
        (int(g) + 1, int(c) + 1, int(counts[c, g])) for c, g in zip(cells, genes, strict=True)
    ]
    if repeats:  # split some counts into two entries, which the reader must sum
        split = []
        for gene, cell, value in entries:
            if value > 1 and rng.random() < 0.5:
                part = int(rng.integers(0, value + 1))
                split += [(gene, cell, part), (gene, cell, value - part)]
            else:
                split.append((gene, cell, value))
        entries = split
    if order == "cellranger":
        entries.sort(key=lambda e: (e[1], -e[0]))
    elif order == "ascending":
        entries.sort(key=lambda e: (e[1], e[0]))
    else:
        entries = [entries[i] for i in rng.permutation(len(entries))]
    if field == "real":
        formats = ["{}", "{}.0", "{}e0", "{}.000"]
        body = [f"{g} {c} " + formats[int(rng.integers(4))].format(v) for g, c, v in entries]
    else:
        body = [f"{g} {c} {v}" for g, c, v in entries]
    header = f"%%MatrixMarket matrix coordinate {field} general\n" + ("%\n" if comment else "")
    size = f"{counts.shape[1]} {counts.shape[0]} {len(entries)}\n"
    return header + size + "".join(line + "\n" for line in body)


def write_trio(
    folder: Path,
    matrix: str,
    features: list[str],
    barcodes: list[str],
    *,
    gz: tuple[bool, bool, bool] = (False, False, False),
    features_name: str = "features.tsv",
    prefix: str = "",
) -> dict[str, Path]:
    """Write the three files as given (``features`` are whole lines), each gzipped or not."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for (role, name, text), compress in zip(
        (
            ("matrix", "matrix.mtx", matrix),
            ("features", features_name, "".join(f + "\n" for f in features)),
            ("barcodes", "barcodes.tsv", "".join(b + "\n" for b in barcodes)),
        ),
        gz,
        strict=True,
    ):
        path = folder / (prefix + name + (".gz" if compress else ""))
        path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
        files[role] = path
    return files


counts_matrices = st.tuples(st.integers(1, 6), st.integers(1, 7)).flatmap(
    lambda shape: arrays(
        np.int64, shape, elements=st.one_of(st.just(0), st.just(0), st.integers(0, 40))
    )
)


@settings(max_examples=120, deadline=None)
@given(
    counts=counts_matrices,
    version=st.sampled_from([2, 3]),
    gz=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    order=st.sampled_from(["cellranger", "ascending", "shuffled"]),
    field=st.sampled_from(["integer", "real"]),
    repeats=st.booleans(),
    comment=st.booleans(),
    symbols=st.lists(st.sampled_from(["A", "B", "MT-C", "MT-D", "E"]), min_size=7, max_size=7),
    seed=st.integers(0, 2**16),
)
def test_every_mtx_variant_reads_back_exactly(
    counts, version, gz, order, field, repeats, comment, symbols, seed
):
    n_cells, n_genes = counts.shape
    names = symbols[:n_genes]
    barcodes = [f"BC{i}-1" for i in range(n_cells)]
    ids = [f"ID{i}" for i in range(n_genes)]
    if version == 3:
        features = [f"{i}\t{n}\tGene Expression" for i, n in zip(ids, names, strict=True)]
    else:
        features = [f"{i}\t{n}" for i, n in zip(ids, names, strict=True)]
    rng = np.random.default_rng(seed)
    text = matrix_text(counts, order=order, field=field, repeats=repeats, comment=comment, rng=rng)
    with tempfile.TemporaryDirectory() as folder:
        features_name = "features.tsv" if version == 3 else "genes.tsv"
        write_trio(Path(folder), text, features, barcodes, gz=gz, features_name=features_name)
        adata = read_count_matrix(folder)
    assert_contract(adata, counts, barcodes, names)
    assert list(adata.var["gene_ids"]) == ids


def test_large_shuffled_matrix_with_repeats_is_sorted_exactly(tmp_path):
    rng = np.random.default_rng(5)
    counts = rng.poisson(2.0, size=(300, 200)) * (rng.random((300, 200)) < 0.3)
    barcodes = [f"BC{i}" for i in range(300)]
    names = [f"G{i}" for i in range(200)]
    text = matrix_text(counts, order="shuffled", repeats=True, rng=rng)
    write_trio(tmp_path, text, names, barcodes, gz=(True, False, True))
    assert_contract(read_count_matrix(tmp_path), counts, barcodes, names)


# --- malformed inputs ------------------------------------------------------------------------

FEATURES = ["ID1\tA\tGene Expression", "ID2\tB\tGene Expression", "ID3\tMT-C\tGene Expression"]
BARCODES = ["AAAC-1", "AAAG-1"]
GOOD_BODY = "3 2 3\n3 1 5\n1 1 2\n2 2 1\n"


@pytest.mark.parametrize(
    ("matrix", "message", "line"),
    [
        ("%%MatrixMarket matrix coordinate foo general\n" + GOOD_BODY, "header element", 1),
        ("%%MatrixMarket matrix coordinate pattern general\n3 2 1\n1 1\n", "not a count", 1),
        ("%%MatrixMarket matrix coordinate complex general\n3 2 1\n1 1 1 0\n", "not a count", 1),
        ("%%MatrixMarket matrix array integer general\n3 2\n1\n2\n3\n4\n5\n6\n", "not a count", 1),
        ("%%MatrixMarket matrix coordinate integer symmetric\n" + GOOD_BODY, "not a count", 1),
        (BANNER + "%\n3 x 3\n3 1 5\n1 1 2\n2 2 1\n", "bad size line", 3),
        (BANNER + "3 2\n3 1 5\n", "bad size line", 2),
        (BANNER + "3 2 3\n3 1 5\n4 1 2\n2 2 1\n", r"row index out of bounds \(.* 3 x 2\)", 4),
        (BANNER + "3 2 3\n3 1 5\n1 3 2\n2 2 1\n", "column index out of bounds", 4),
        (BANNER + "3 2 3\n3 1 5\n0 1 2\n2 2 1\n", "row index out of bounds", 4),
        (BANNER + "3 2 3\n3 1 5\n1 1 2\n", "ends after 2 of the 3 entries", None),
        (BANNER + "3 2 2\n3 1 5\n1 1 2\n2 2 1\n", "too many lines", 5),
        (BANNER + "3 2 3\n3 1 5\n1 1 2.5\n2 2 1\n", "entry 2 has count 2.5, not a whole", 4),
        (BANNER + "%\n3 2 3\n3 1 5\n\n1 1 2\n2 2 -1\n", "entry 3 has count -1, negative", 7),
        (BANNER + "3 2 3\n3 1 5\n1 1 abc\n2 2 1\n", "invalid", 4),
        ("%%MatrixMarket matrix coordinate real general\n3 2 2\n3 1 0.5\n1 1 1\n", "0.5", 3),
        ("%%MatrixMarket matrix coordinate real general\n3 2 2\n3 1 nan\n1 1 1\n", "nan", 3),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_malformed_matrix_names_file_and_line(tmp_path, matrix, message, line, compress):
    files = write_trio(tmp_path, matrix, FEATURES, BARCODES, gz=(compress, False, False))
    with pytest.raises(CountMatrixError, match=message) as error:
        read_count_matrix(tmp_path)
    assert error.value.path == str(files["matrix"])
    assert error.value.line == line


def test_truncated_gzip_matrix_is_reported(tmp_path):
    counts, barcodes, ids, names = small_sample(n_cells=400, n_genes=50)
    written = write_10x_mtx(tmp_path, counts, barcodes, ids, names)
    data = written["matrix"].read_bytes()
    written["matrix"].write_bytes(data[: len(data) // 2])
    with pytest.raises(CountMatrixError, match="truncated") as error:
        read_count_matrix(tmp_path)
    assert error.value.path == str(written["matrix"])


def test_truncated_gzip_features_are_reported(tmp_path):
    counts, barcodes, ids, names = small_sample()
    written = write_10x_mtx(tmp_path, counts, barcodes, ids, names)
    written["features"].write_bytes(written["features"].read_bytes()[:-12])
    with pytest.raises(CountMatrixError, match="truncated") as error:
        read_count_matrix(tmp_path)
    assert error.value.path == str(written["features"])


@pytest.mark.parametrize(
    ("features", "barcodes", "culprit", "message"),
    [
        (FEATURES[:2], BARCODES, "features", "features.tsv lists 2 features but matrix.mtx has 3"),
        (FEATURES, BARCODES[:1], "barcodes", "barcodes.tsv lists 1 barcodes but matrix.mtx has 2"),
        (FEATURES, ["AAAC-1", "AAAC-1"], "barcodes", "'AAAC-1' is on lines 1 and 2"),
        (FEATURES, ["AAAC-1", "", "AAAG-1"], "barcodes", "empty line"),
        (FEATURES[:2] + ["ID3\tMT-C"], BARCODES, "features", "2 tab-separated columns"),
    ],
)
def test_mismatched_features_and_barcodes_name_the_files(
    tmp_path, features, barcodes, culprit, message
):
    files = write_trio(tmp_path, BANNER + GOOD_BODY, features, barcodes)
    with pytest.raises(CountMatrixError, match=message) as error:
        read_count_matrix(tmp_path)
    assert error.value.path == str(files[culprit])


def test_barcodes_must_be_utf8(tmp_path):
    files = write_trio(tmp_path, BANNER + GOOD_BODY, FEATURES, BARCODES)
    files["barcodes"].write_bytes(b"AAAC-1\nAA\xffG-1\n")
    with pytest.raises(CountMatrixError, match="not UTF-8") as error:
        read_count_matrix(tmp_path)
    assert (error.value.path, error.value.line) == (str(files["barcodes"]), 2)


@pytest.mark.parametrize("name", ["matrix.mtx.gz", "GSM1_matrix.mtx"])
def test_lone_matrix_says_its_siblings_are_missing(tmp_path, name):
    counts, barcodes, ids, names = small_sample()
    written = write_10x_mtx(tmp_path / "full", counts, barcodes, ids, names)
    lone = tmp_path / "lone" / name
    lone.parent.mkdir()
    data = written["matrix"].read_bytes()
    lone.write_bytes(data if name.endswith(".gz") else gzip.decompress(data))
    prefix = name.removesuffix(".gz").removesuffix("matrix.mtx")
    with pytest.raises(CountMatrixError) as error:
        read_count_matrix(lone)
    message = str(error.value)
    assert message.startswith(str(lone))
    assert f"{prefix}features.tsv[.gz]" in message and f"{prefix}barcodes.tsv[.gz]" in message
    assert "not found next to it" in message


def test_matrix_market_file_under_another_name_is_explained(tmp_path):
    path = tmp_path / "counts.mtx"
    path.write_text(BANNER + GOOD_BODY)
    with pytest.raises(CountMatrixError, match=r"named \[prefix\]matrix.mtx"):
        detect_layout(path)


def test_folder_missing_barcodes_is_explained(tmp_path):
    files = write_trio(tmp_path, BANNER + GOOD_BODY, FEATURES, BARCODES)
    files["barcodes"].unlink()
    with pytest.raises(CountMatrixError, match=r"barcodes.tsv\[.gz\] not found next to it"):
        detect_layout(tmp_path)


def test_other_inputs_are_not_claimed(tmp_path):
    (tmp_path / "empty").mkdir()
    csv = tmp_path / "counts.csv.gz"
    csv.write_bytes(gzip.compress(b",AAAC-1\nG1,1\n"))
    assert mtx.detect(tmp_path / "empty", b"") is None
    assert mtx.detect(csv, b",AAAC-1\nG1,1\n") is None
    shutil.rmtree(tmp_path / "empty")
    assert find_trios(tmp_path) == {}


def test_folder_of_sample_folders_is_not_taken_for_genomes(tmp_path):
    counts, barcodes, ids, names = small_sample()
    for sample in ("s1", "s2"):
        write_10x_mtx(tmp_path / sample, counts, barcodes, ids, names)
    with pytest.raises(CountMatrixError, match=r"a folder of MTX folders \(s1/, s2/\)"):
        detect_layout(tmp_path)
