"""detect_layout: each input's layout by content, unsupported ones named, and no numba to look."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sc_assets.core.count_matrix_writer import write_count_matrix
from sc_assets.core.errors import CountMatrixError
from sc_assets.core.readers import FORMATS, detect_layout
from sc_assets.core.tenx_writers import write_10x_h5, write_10x_mtx

# The shared fixtures sit next to the checkout (../shared); SC_ASSETS_10X_FIXTURES overrides.
FIXTURES = Path(
    os.environ.get("SC_ASSETS_10X_FIXTURES")
    or Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "10x"
)
real_files = pytest.mark.skipif(
    not (FIXTURES / "v3").is_dir(), reason=f"real 10x fixtures not found at {FIXTURES}"
)

COUNTS = sp.csr_matrix(np.array([[1, 0, 3, 0, 2], [0, 4, 0, 1, 0], [5, 0, 0, 0, 1]]))
BARCODES = ["AAAC-1", "AAAG-1", "AAAT-1"]
GENES = ["CD3E", "MT-CO1", "ACTB", "TBCE", "GAPDH"]
IDS = [f"ENSG{i:05d}" for i in range(len(GENES))]


def write_h5ad(path: Path, layer: bool = True) -> Path:
    """Counts in ``layers["counts"]`` (and halved in X), or in X only."""
    var = pd.DataFrame({"gene_ids": IDS}, index=GENES)
    counts = COUNTS.astype(np.float32)
    adata = ad.AnnData(counts, obs=pd.DataFrame(index=BARCODES), var=var)
    if layer:
        adata.layers["counts"] = counts
        adata.X = counts * 0.5
    adata.write_h5ad(path)
    return path


def write_inputs(folder: Path) -> dict[str, tuple[Path, str, str]]:
    """One input of each kind: name -> (path, layout, detail)."""
    folder.mkdir(parents=True, exist_ok=True)
    csv = write_count_matrix(folder / "GSM1_Ctrl1_count_matrix.csv.gz", COUNTS, GENES, BARCODES)
    tsv = write_count_matrix(folder / "m.tsv", COUNTS, GENES, BARCODES, sep="\t", compress=False)
    write_10x_h5(folder / "v3.h5", COUNTS, BARCODES, IDS, GENES)
    write_10x_h5(folder / "v2.h5", COUNTS, BARCODES, IDS, GENES, version=2)
    write_10x_mtx(folder / "mtx_v3", COUNTS, BARCODES, IDS, GENES)
    write_10x_mtx(folder / "mtx_v2", COUNTS, BARCODES, IDS, GENES, version=2)
    written = write_10x_mtx(folder / "geo" / "GSM2_", COUNTS, BARCODES, IDS, GENES)
    solo = folder / "star" / "Solo.out" / "Gene" / "filtered"
    write_10x_mtx(solo, COUNTS, BARCODES, IDS, GENES, compress=False)
    return {
        "csv": (csv, "csv", "a gzipped CSV count matrix"),
        "tsv": (tsv, "tsv", "an uncompressed TSV count matrix"),
        "10x_h5 v3": (folder / "v3.h5", "10x_h5", "a Cell Ranger 3 HDF5 file"),
        "10x_h5 v2": (folder / "v2.h5", "10x_h5", "a Cell Ranger 1-2 HDF5 file (genomes: GRCh38)"),
        "10x_mtx v3": (folder / "mtx_v3", "10x_mtx", "a 10x MTX v3 folder"),
        "10x_mtx v2": (folder / "mtx_v2", "10x_mtx", "a 10x MTX v2 folder"),
        "prefixed trio": (written["matrix"], "10x_mtx", "a prefixed MTX trio GSM2_..."),
        "starsolo": (folder / "star", "starsolo", "a STARsolo Solo.out/Gene/filtered folder"),
        "h5ad": (
            write_h5ad(folder / "a.h5ad"),
            "h5ad",
            "an AnnData file (X: csr_matrix 3 x 5; layers: counts)",
        ),
        "h5ad X": (
            write_h5ad(folder / "x.h5ad", layer=False),
            "h5ad",
            "an AnnData file (X: csr_matrix 3 x 5)",
        ),
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, str]]:
    return write_inputs(tmp_path_factory.mktemp("inputs"))


KINDS = [
    "csv",
    "tsv",
    "10x_h5 v3",
    "10x_h5 v2",
    "10x_mtx v3",
    "10x_mtx v2",
    "prefixed trio",
    "starsolo",
    "h5ad",
    "h5ad X",
]


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_input_is_told_by_its_content(inputs, kind: str) -> None:
    path, layout, detail = inputs[kind]
    source = detect_layout(path)
    assert (source.layout, source.detail) == (layout, detail)
    assert all(file.is_file() for file in source.files.values())
    assert detect_layout(path, layout) == source  # insisting on the right layout is fine


@real_files
@pytest.mark.parametrize(
    ("relative", "layout", "detail"),
    [
        ("v3/filtered_feature_bc_matrix.h5", "10x_h5", "a Cell Ranger 3 HDF5 file"),
        (
            "v2/filtered_gene_bc_matrices_h5.h5",
            "10x_h5",
            "a Cell Ranger 1-2 HDF5 file (genomes: hg19_chr21)",
        ),
        (
            "v2/multiple_genomes.h5",
            "10x_h5",
            "a Cell Ranger 1-2 HDF5 file (genomes: another_genome, hg19_chr21)",
        ),
        ("v3/filtered_feature_bc_matrix", "10x_mtx", "a 10x MTX v3 folder"),
        (
            "v2/filtered_gene_bc_matrices",
            "10x_mtx",
            "a Cell Ranger 2 MTX folder (genome hg19_chr21)",
        ),
        ("int-ids", "10x_mtx", "a 10x MTX v3 folder"),
    ],
)
def test_real_cell_ranger_outputs_are_told_apart(relative: str, layout: str, detail: str) -> None:
    source = detect_layout(FIXTURES / relative)
    assert (source.layout, source.detail) == (layout, detail)


def unsupported(path: Path) -> str:
    with pytest.raises(CountMatrixError) as raised:
        detect_layout(path)
    prefix = f"{path}: not a supported count matrix: found "
    message = str(raised.value)
    assert message.startswith(prefix)
    assert message.endswith("; supported layouts: " + ", ".join(FORMATS))
    return message.removeprefix(prefix).split("; supported layouts")[0]


def test_a_loom_file_is_named_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "cells.loom"
    with h5py.File(path, "w") as f:
        f["matrix"] = np.zeros((5, 3), np.float32)
        f.create_group("row_attrs")["Gene"] = np.array([b"A", b"B", b"C", b"D", b"E"])
        f.create_group("col_attrs")["CellID"] = np.array([b"c1", b"c2", b"c3"])
    found = unsupported(path)
    assert (
        found == "a loom file (not supported: convert it with anndata.read_loom(...).write_h5ad())"
    )


@pytest.mark.parametrize("compress", [True, False], ids=["rds", "RData uncompressed"])
def test_an_r_data_file_is_named(tmp_path: Path, compress: bool) -> None:
    # An R serialization: "X\n" (XDR), then the format version, as saveRDS writes it.
    content = b"X\n\x00\x00\x00\x03\x00\x04\x03\x00\x00\x03\x05\x00" + bytes(range(64))
    path = tmp_path / "counts.rds"
    path.write_bytes(gzip.compress(content) if compress else content)
    found = unsupported(path)
    assert found == "an R data file (.rds/.RData): export the counts from R (e.g. as 10x MTX)"


def test_an_empty_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert unsupported(tmp_path / "empty") == "an empty folder"


def test_a_gzipped_hdf5_file_says_to_decompress_it(tmp_path: Path) -> None:
    write_10x_h5(tmp_path / "m.h5", COUNTS, BARCODES, IDS, GENES)
    path = tmp_path / "m.h5.gz"
    path.write_bytes(gzip.compress((tmp_path / "m.h5").read_bytes()))
    assert unsupported(path) == "a gzip-compressed HDF5 file: decompress it first (gunzip)"


def test_random_binary_data_shows_its_first_bytes(tmp_path: Path) -> None:
    content = bytes([7, 200, 13, 0, 99, 1, 2, 3]) + np.random.default_rng(0).bytes(500)
    path = tmp_path / "counts.bin"
    path.write_bytes(content)
    assert unsupported(path) == "binary data starting with bytes 07 c8 0d 00 63 01 02 03"


def test_a_missing_path_and_an_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(CountMatrixError, match="no such file or folder"):
        detect_layout(tmp_path / "absent.h5")
    with pytest.raises(ValueError, match="unknown format 'loom'"):
        detect_layout(tmp_path, "loom")


def test_looking_at_inputs_never_imports_numba(tmp_path: Path) -> None:
    """The code server, the sensors and merge runs only look: numba (0.3 s) stays unloaded.

    Loading the code location, detecting every layout, reading every layout's gene names (for
    an .h5ad with the counts in X, after checking they are counts) and scanning a data folder
    of samples, in a fresh process.
    """
    inputs = write_inputs(tmp_path / "inputs")
    data = tmp_path / "data"  # a scanned folder: GEO CSVs, Cell Ranger files and an .h5ad
    write_count_matrix(data / "GSM3_Ctrl1_count_matrix.csv.gz", COUNTS, GENES, BARCODES)
    write_10x_h5(data / "pbmc1_filtered_feature_bc_matrix.h5", COUNTS, BARCODES, IDS, GENES)
    write_10x_mtx(data / "pbmc2" / "filtered_feature_bc_matrix", COUNTS, BARCODES, IDS, GENES)
    write_h5ad(data / "donor7.h5ad")
    code = f"""
import json, sys
import sc_assets.definitions
from sc_assets.core.discovery import scan_inbox
from sc_assets.core.readers import detect_layout, read_gene_names
from sc_assets.core.samples import SampleSpec
paths = {[str(path) for path, _, _ in inputs.values()]!r}
layouts = [detect_layout(path).layout for path in paths]
genes = [len(read_gene_names(SampleSpec("s1", path))) for path in paths]
scan = scan_inbox({str(data)!r})
print(json.dumps({{"layouts": layouts, "genes": genes, "samples": sorted(scan.samples),
                   "ignored": sorted(scan.ignored), "numba": "numba" in sys.modules}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["layouts"] == [layout for _, layout, _ in inputs.values()]
    assert found["genes"] == [len(GENES)] * len(inputs)
    assert found["samples"] == ["GSM3_Ctrl1", "donor7", "pbmc1", "pbmc2"]
    assert found["ignored"] == []
    assert found["numba"] is False
