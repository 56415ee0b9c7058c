"""read_samplesheet: every sample of a valid sheet, or every problem of an invalid one."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sc_assets.core.errors import CountMatrixError
from sc_assets.core.readers import detect_layout
from sc_assets.core.samples import SampleSpec
from sc_assets.core.samplesheet import (
    Samplesheet,
    SamplesheetError,
    SheetProblem,
    read_samplesheet,
)
from sc_assets_tests.conftest import write_sample

FIXTURES_10X = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "10x"
needs_10x = pytest.mark.skipif(
    not FIXTURES_10X.is_dir(), reason=f"no 10x fixtures in {FIXTURES_10X}"
)
GENES = ["GENE1", "GENE2", "MT-CO1"]


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A study folder with two small gzipped CSVs in ``data/`` (a sheet is written next to it)."""
    (tmp_path / "data").mkdir()
    for seed, key in enumerate(("GSM1_Ctrl1", "GSM2_Pre1")):
        write_sample(tmp_path / "data", key, n_cells=4, seed=seed, genes=GENES)
    return tmp_path


CTRL = "data/GSM1_Ctrl1_count_matrix.csv.gz"
PRE = "data/GSM2_Pre1_count_matrix.csv.gz"


def write_sheet(folder: Path, text: str, name: str = "samplesheet.csv", **kwargs) -> Path:
    path = folder / name
    path.write_text(text, encoding=kwargs.pop("encoding", "utf-8"), newline="", **kwargs)
    return path


def problems_of(path: Path) -> list[tuple[int | None, str | None, str]]:
    with pytest.raises(SamplesheetError) as caught:
        read_samplesheet(path)
    return [(p.line, p.column, p.message) for p in caught.value.problems]


def csv_detail(path: Path) -> str:
    """How the detector describes a CSV input (the readers own that wording)."""
    return f"{detect_layout(path).detail} (csv)"


# --- valid sheets ---------------------------------------------------------------------------


def test_a_valid_sheet_gives_one_spec_per_row(study: Path) -> None:
    sheet = write_sheet(
        study,
        "sample,path,condition,donor,batch\n"
        f"Ctrl1,{CTRL},control,D1,b1\n"
        f"Pre1,{study / PRE},treated,,b1\n",  # an absolute path; an empty metadata cell
    )
    got = read_samplesheet(sheet)

    assert isinstance(got, Samplesheet)
    assert got.path == sheet
    assert got.columns == ("sample", "path", "condition", "donor", "batch")
    assert got.metadata_columns == ("condition", "donor", "batch")
    assert got.samples == ("Ctrl1", "Pre1")
    assert len(got) == 2
    ctrl, pre = got.specs
    assert ctrl == SampleSpec(
        sample="Ctrl1",
        path=study / CTRL,
        format="auto",
        orientation="genes_x_cells",
        metadata=(("condition", "control"), ("donor", "D1"), ("batch", "b1")),
        categorical=frozenset({"condition", "donor", "batch"}),
        line=2,
    )
    assert ctrl.path.is_absolute()
    assert pre.path == study / PRE and pre.line == 3
    assert pre.metadata == (("condition", "treated"), ("donor", None), ("batch", "b1"))
    assert got.spec("Pre1") is pre
    with pytest.raises(KeyError, match="no sample 'Post1'"):
        got.spec("Post1")


def test_missing_metadata_is_a_missing_categorical_value(study: Path) -> None:
    sheet = write_sheet(study, f"sample,path,donor\nPre1,{PRE},\n")
    columns = read_samplesheet(sheet).spec("Pre1").obs_columns(3)
    donor = columns["donor"]
    assert isinstance(donor, pd.Categorical)
    assert donor.isna().all() and len(donor.categories) == 0
    np.testing.assert_array_equal(columns["sample"], ["Pre1"] * 3)


def test_options_whitespace_bom_crlf_quotes_and_blank_lines(study: Path) -> None:
    sheet = write_sheet(
        study,
        "\ufeff sample , path ,format,orientation,counts_layer,genome, tissue \r\n"
        f'  Ctrl1 ,  {CTRL}  , csv ,genes_x_cells,,,"lung, left"\r\n'
        "\r\n"
        ",,,,,,\r\n"  # a spreadsheet's empty row
        f"Pre1,{PRE},,,,,\r\n",
    )
    got = read_samplesheet(sheet)
    assert got.columns == (
        "sample",
        "path",
        "format",
        "orientation",
        "counts_layer",
        "genome",
        "tissue",
    )
    ctrl, pre = got.specs
    assert (ctrl.sample, ctrl.path, ctrl.format, ctrl.line) == ("Ctrl1", study / CTRL, "csv", 2)
    assert ctrl.metadata == (("tissue", "lung, left"),)
    assert (ctrl.counts_layer, ctrl.genome) == (None, None)
    assert (pre.format, pre.orientation, pre.line) == ("auto", "genes_x_cells", 5)
    assert pre.metadata == (("tissue", None),)


def test_a_header_without_rows_is_a_study_without_samples(study: Path) -> None:
    got = read_samplesheet(write_sheet(study, "sample,path,condition\n"))
    assert got.specs == () and got.samples == () and len(got) == 0
    assert got.metadata_columns == ("condition",)


def test_paths_are_relative_to_the_sheets_folder(study: Path, monkeypatch) -> None:
    (study / "sheets").mkdir()
    sheet = write_sheet(study / "sheets", f"sample,path\nCtrl1,../{CTRL}\n")
    monkeypatch.chdir(study / "data")  # not the current folder
    assert read_samplesheet(sheet).spec("Ctrl1").path == study / CTRL


@needs_10x
def test_10x_inputs_and_their_options(tmp_path: Path) -> None:
    v3 = FIXTURES_10X / "v3" / "filtered_feature_bc_matrix.h5"
    mtx = FIXTURES_10X / "v3" / "filtered_feature_bc_matrix"
    mixed = FIXTURES_10X / "v2" / "multiple_genomes.h5"
    sheet = write_sheet(
        tmp_path,
        "sample,path,format,genome\n"
        f"pbmc,{v3},10x_h5,\n"
        f"pbmc_mtx,{mtx},10x_mtx,\n"
        f"human,{mixed},,hg19_chr21\n"
        f"other,{mixed},,another_genome\n",  # one file, two samples: one per genome
    )
    got = read_samplesheet(sheet)
    assert [(s.sample, s.path, s.format, s.genome) for s in got.specs] == [
        ("pbmc", v3, "10x_h5", None),
        ("pbmc_mtx", mtx, "10x_mtx", None),
        ("human", mixed, "auto", "hg19_chr21"),
        ("other", mixed, "auto", "another_genome"),
    ]
    # The same file and genome twice is one input read twice.
    write_sheet(tmp_path, f"sample,path,genome\nA,{mixed},hg19_chr21\nB,{mixed},hg19_chr21\n")
    message = f"{mixed} is also the input of line 2 (sample A): an input can be one sample only"
    assert problems_of(sheet) == [(3, "path", message)]


def test_counts_layer_of_an_h5ad_input(study: Path) -> None:
    import anndata as ad
    import scipy.sparse as sp

    X = sp.csr_matrix(np.eye(4, 3, dtype=np.float32))
    adata = ad.AnnData(X=X, layers={"raw_counts": X.copy()})
    adata.obs_names = [f"BC{i}" for i in range(4)]
    adata.var_names = GENES
    adata.write_h5ad(study / "data" / "cells.h5ad")
    sheet = write_sheet(study, "sample,path,counts_layer\nA,data/cells.h5ad,raw_counts\n")
    spec = read_samplesheet(sheet).spec("A")
    assert (spec.counts_layer, spec.genome, spec.format) == ("raw_counts", None, "auto")


# --- the file as a whole --------------------------------------------------------------------


def test_an_empty_file(study: Path) -> None:
    sheet = write_sheet(study, "\n\n")
    message = (
        "the file is empty: the first line must be the header, with at least the columns "
        "sample and path"
    )
    assert problems_of(sheet) == [(None, None, message)]


@pytest.mark.parametrize(("separator", "name"), [("\t", "tab"), (";", "semicolon")])
def test_another_separator(study: Path, separator: str, name: str) -> None:
    sheet = write_sheet(study, f"sample{separator}path\nCtrl1{separator}{CTRL}\n")
    assert problems_of(sheet) == [(1, None, f"looks {name}-separated: use commas")]


def test_text_that_is_not_utf8(study: Path) -> None:
    sheet = study / "samplesheet.csv"
    sheet.write_bytes(f"sample,path,tissue\nCtrl1,{CTRL},f\xe9mur\n".encode("latin-1"))
    message = "not UTF-8 text (byte 0xe9): save the sheet as 'CSV UTF-8'"
    assert problems_of(sheet) == [(2, None, message)]
    sheet.write_text("sample,path\n", encoding="utf-16")
    message = "is UTF-16 text (Excel's 'Unicode text'): save it as 'CSV UTF-8'"
    assert problems_of(sheet) == [(None, None, message)]


def test_a_missing_sheet_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_samplesheet(tmp_path / "samplesheet.csv")


# --- the header -----------------------------------------------------------------------------


def test_header_problems(study: Path) -> None:
    sheet = write_sheet(
        study,
        "Sample,donor,,total_counts,donor,_index,site/region,pct_counts_mt\n"
        "Ctrl1,D1,x,1,D1,i,r,0\n",
    )
    needs = "required column missing: a samplesheet needs the columns sample and path"
    qc = "reserved: a QC metric the platform computes for every cell; rename the column"
    assert problems_of(sheet) == [
        (1, None, "column 3 has no name: every column needs one"),
        (1, "total_counts", qc),
        (1, "donor", "appears twice (columns 2 and 5): column names must be unique"),
        (
            1,
            "_index",
            "reserved: anndata stores the obs index under this name; rename the column",
        ),
        (
            1,
            "site/region",
            "anndata cannot store an obs column of this name: rename the column",
        ),
        (1, "pct_counts_mt", qc),
        (1, "sample", needs + " (column names are case-sensitive: Sample is not sample)"),
        (1, "path", needs),
    ]


# --- rows -----------------------------------------------------------------------------------


def test_sample_name_problems(study: Path) -> None:
    sheet = write_sheet(
        study,
        "sample,path\n"
        f"Ctrl1,{CTRL}\n"
        f",{PRE}\n"
        f"Ctrl 2,{PRE}\n"
        f"Ctrl1,{PRE}\n"
        f"ctrl1,{PRE}\n"
        f"GSM9_Ctrl1,{PRE}\n"
        f"{'x' * 65},{PRE}\n",
    )
    invalid = (
        "is not a valid sample name: 1 to 64 letters, digits, '.', '_' or '-', starting with a "
        "letter or digit"
    )
    got = problems_of(sheet)
    # (each row also repeats the input of line 3, reported on the path column)
    assert [p for p in got if p[1] == "sample"] == [
        (3, "sample", "empty: every row needs a sample name"),
        (4, "sample", f"'Ctrl 2' {invalid}"),
        (5, "sample", "Ctrl1 is already the sample of line 2: sample names must be unique"),
        (
            6,
            "sample",
            "ctrl1 and Ctrl1 (line 2) differ only in case: sample names are file names in "
            "storage, which may not tell case apart",
        ),
        (
            7,
            "sample",
            "GSM9_Ctrl1 gives the label Ctrl1, as Ctrl1 on line 2 does: labels (obs['sample'] "
            "and the cell-name prefix in the merge) must be unique",
        ),
        (8, "sample", f"{'x' * 65!r} {invalid}"),
    ]


def test_path_problems(study: Path) -> None:
    (study / "notes.txt").write_text("hello\n")
    (study / "empty").mkdir()
    sheet = write_sheet(
        study,
        "sample,path\n"
        "A,\n"
        "B,data/x.h5\n"
        f"C,{study / 'nowhere.h5ad'}\n"
        "D,notes.txt\n"
        "E,empty\n"
        f"F,{CTRL}\n"
        f"G,data/../{CTRL}\n"
        f"H,{'x' * 300}\n",
    )
    not_a_matrix = {}
    for name in ("notes.txt", "empty"):
        with pytest.raises(CountMatrixError) as caught:
            detect_layout(study / name)
        not_a_matrix[name] = caught.value.problem
    assert problems_of(sheet) == [
        (
            2,
            "path",
            "empty: every row needs the path of its input (a file or folder, relative to the "
            "samplesheet's folder or absolute)",
        ),
        (3, "path", "data/x.h5 does not exist"),
        (4, "path", f"{study / 'nowhere.h5ad'} does not exist"),
        (5, "path", not_a_matrix["notes.txt"]),
        (6, "path", not_a_matrix["empty"]),
        (
            8,
            "path",
            f"data/../{CTRL} is also the input of line 7 (sample F): an input can be one "
            "sample only",
        ),
        (9, "path", f"{'x' * 300} cannot be read: File name too long"),
    ]
    assert not_a_matrix["notes.txt"].startswith("not a supported count matrix: found text")
    assert str(study) not in not_a_matrix["notes.txt"]  # the path is not repeated


def test_a_symlink_to_an_input_is_the_same_input(study: Path) -> None:
    (study / "link.csv.gz").symlink_to(study / CTRL)
    sheet = write_sheet(study, f"sample,path\nA,{CTRL}\nB,link.csv.gz\n")
    message = "link.csv.gz is also the input of line 2 (sample A): an input can be one sample only"
    assert problems_of(sheet) == [(3, "path", message)]


def test_option_problems(study: Path) -> None:
    sheet = write_sheet(
        study,
        "sample,path,format,orientation,counts_layer,genome\n"
        f"A,{CTRL},h5,genes x cells,,\n"
        f"B,{PRE},h5ad,,,\n"
        f"C,{CTRL},,cells_x_genes,counts,GRCh38\n",
    )
    found = csv_detail(study / CTRL)
    formats = "auto, csv, tsv, 10x_h5, 10x_mtx, starsolo or h5ad"
    assert problems_of(sheet) == [
        (2, "format", f"'h5' is not a format: use {formats}"),
        (
            2,
            "orientation",
            "'genes x cells' is not an orientation: use genes_x_cells or cells_x_genes",
        ),
        (3, "format", f"given as h5ad, but the input is {csv_detail(study / PRE)}"),
        (
            4,
            "path",
            f"{CTRL} is also the input of line 2 (sample A): an input can be one sample only",
        ),
        (4, "counts_layer", f"applies to h5ad inputs only, and this is {found}: leave it empty"),
        (
            4,
            "genome",
            f"applies to 10x_h5 or 10x_mtx inputs only, and this is {found}: leave it empty",
        ),
    ]


@needs_10x
def test_orientation_applies_to_text_matrices_only(tmp_path: Path) -> None:
    v3 = FIXTURES_10X / "v3" / "filtered_feature_bc_matrix.h5"
    sheet = write_sheet(tmp_path, f"sample,path,orientation\nA,{v3},cells_x_genes\n")
    found = f"{detect_layout(v3).detail} (10x_h5)"
    message = f"applies to csv or tsv inputs only, and this is {found}: leave it empty"
    assert problems_of(sheet) == [(2, "orientation", message)]
    # The default value changes nothing: accepted anywhere.
    write_sheet(tmp_path, f"sample,path,orientation\nA,{v3},genes_x_cells\n")
    assert read_samplesheet(sheet).spec("A").orientation == "genes_x_cells"


def test_rows_with_the_wrong_number_of_fields(study: Path) -> None:
    sheet = write_sheet(
        study,
        f'sample,path,condition\nA,{CTRL}\nB,{PRE},treated,extra\nC,{PRE},"a,b"\n',
    )
    assert problems_of(sheet) == [
        (2, None, "2 fields, but the header has 3 columns"),
        (
            3,
            None,
            "4 fields, but the header has 3 columns (a value holding a comma must be in double "
            "quotes)",
        ),
    ]


def test_stray_quotes_and_a_field_too_long(study: Path) -> None:
    sheet = write_sheet(study, f'sample,path,tissue\nA,{CTRL},"lung\nB,{PRE},liver\n')
    assert problems_of(sheet) == [(2, None, "a double quote opened on this line is never closed")]
    write_sheet(study, f'sample,path,tissue\nA,{CTRL},"lung" left\n')
    message = "not readable as CSV: ',' expected after '\"'"
    assert problems_of(sheet) == [(2, None, message)]
    write_sheet(study, f"sample,path,note\nA,{CTRL},x\nB,{PRE},{'x' * 200_000}\n")
    message = "not readable as CSV: field larger than field limit (131072)"
    assert problems_of(sheet) == [(3, None, message)]


# --- all or nothing -------------------------------------------------------------------------


def test_every_problem_of_the_sheet_is_reported_with_its_place(study: Path) -> None:
    sheet = write_sheet(
        study,
        "sample,path,format,total_counts\n"
        f"Ctrl1,{CTRL},,1\n"
        "\n"
        "Pre 1,data/x.h5,xx,2\n"
        f"Ctrl1,{PRE}\n"
        f"Pre1,{PRE},,3\n",
    )
    with pytest.raises(SamplesheetError) as caught:
        read_samplesheet(sheet)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.path == str(sheet)
    assert str(error).splitlines() == [
        f"{sheet}, line 1, column total_counts: reserved: a QC metric the platform computes "
        "for every cell; rename the column",
        f"{sheet}, line 4, column sample: 'Pre 1' is not a valid sample name: 1 to 64 letters, "
        "digits, '.', '_' or '-', starting with a letter or digit",
        f"{sheet}, line 4, column path: data/x.h5 does not exist",
        f"{sheet}, line 4, column format: 'xx' is not a format: use auto, csv, tsv, 10x_h5, "
        "10x_mtx, starsolo or h5ad",
        f"{sheet}, line 5: 2 fields, but the header has 4 columns",
    ]
    assert all(isinstance(p, SheetProblem) for p in error.problems)
    # The error survives a process boundary (Dagster runs steps in subprocesses).
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.problems, str(copy)) == (error.path, error.problems, str(error))


def test_the_file_name_is_shown_as_given(study: Path, monkeypatch) -> None:
    write_sheet(study, "sample,path\nA,data/x.h5\n")
    monkeypatch.chdir(study)
    with pytest.raises(SamplesheetError) as caught:
        read_samplesheet("samplesheet.csv")
    assert str(caught.value) == "samplesheet.csv, line 2, column path: data/x.h5 does not exist"
