"""The samplesheet: a study's samples, their inputs and the metadata of their cells.

nf-core style: a CSV file (UTF-8, a BOM allowed) with one row per sample::

    sample,path,format,condition,donor
    Ctrl1,data/ctrl1_filtered_feature_bc_matrix.h5,,control,D1
    Pre1,/data/run7/pre1/outs/filtered_feature_bc_matrix,10x_mtx,pre,D1

``sample`` and ``path`` are required; ``format``, ``orientation``, ``counts_layer`` and
``genome`` say how to read an input (see :class:`~sc_assets.core.samples.SampleSpec`); every
other column becomes a categorical obs column of the sample's cells, in sheet order, an empty
cell a missing value. A path is relative to the samplesheet's folder, or absolute.

The sheet is checked all or nothing: :func:`read_samplesheet` returns every sample, or raises
:class:`SamplesheetError` listing every problem of the sheet, each with its line and column.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sc_assets.core.errors import CountMatrixError
from sc_assets.core.qc import OBS_QC_COLUMNS
from sc_assets.core.readers import FORMATS, Source, detect_layout, format_matches
from sc_assets.core.samples import ORIENTATIONS, SAMPLE_NAME_RE, SampleSpec, sample_label

#: Columns every samplesheet has.
REQUIRED_COLUMNS = ("sample", "path")
#: Columns that say how to read an input; all other columns are obs metadata.
OPTION_COLUMNS = ("format", "orientation", "counts_layer", "genome")
#: Layouts each reading option applies to; a value given for another layout is refused,
#: since it would be ignored silently (and most likely sits on the wrong row).
OPTION_LAYOUTS = {
    "orientation": ("csv", "tsv"),
    "counts_layer": ("h5ad",),
    "genome": ("10x_h5", "10x_mtx"),
}
#: Column names a sheet may not use, and why: names the platform writes into obs itself.
RESERVED_COLUMNS = {
    **{name: "a QC metric the platform computes for every cell" for name in OBS_QC_COLUMNS},
    "_index": "anndata stores the obs index under this name",
}
_DEFAULTS = {"format": "auto", "orientation": ORIENTATIONS[0]}
_OTHER_SEPARATORS = {"\t": "tab", ";": "semicolon"}


@dataclass(frozen=True)
class SheetProblem:
    """One problem of a samplesheet: where it is and what is wrong."""

    line: int | None
    """1-based line of the file (the header is line 1), or None for the whole file."""
    column: str | None
    """The column's name, or None for a whole line."""
    message: str

    def located(self, sheet: str) -> str:
        """``samplesheet.csv, line 3, column path: data/x.h5 does not exist``."""
        where = sheet
        if self.line is not None:
            where += f", line {self.line}"
        if self.column is not None:
            where += f", column {self.column}"
        return f"{where}: {self.message}"


class SamplesheetError(ValueError):
    """A samplesheet that cannot be used; its message lists every problem, one per line.

    Attributes
    ----------
    path
        The samplesheet, as given.
    problems
        Every problem found, in file order.
    """

    def __init__(self, path: str | os.PathLike[str], problems: Sequence[SheetProblem]) -> None:
        self.path = os.fspath(path)
        self.problems = list(problems)
        super().__init__("\n".join(problem.located(self.path) for problem in self.problems))

    def __reduce__(self):  # keep the attributes across process boundaries
        return (SamplesheetError, (self.path, self.problems))


@dataclass(frozen=True)
class Samplesheet:
    """A valid samplesheet: its samples in sheet order."""

    path: Path
    """The samplesheet file (absolute)."""
    specs: tuple[SampleSpec, ...]
    """One spec per row, in sheet order."""
    columns: tuple[str, ...]
    """The header's column names, in order."""

    @property
    def metadata_columns(self) -> tuple[str, ...]:
        """The columns that become obs columns, in order."""
        return tuple(c for c in self.columns if c not in REQUIRED_COLUMNS + OPTION_COLUMNS)

    @property
    def samples(self) -> tuple[str, ...]:
        """The sample names, in sheet order."""
        return tuple(spec.sample for spec in self.specs)

    def spec(self, sample: str) -> SampleSpec:
        """The spec of ``sample``; KeyError if the sheet has no such sample."""
        try:
            return self._by_sample[sample]
        except KeyError:
            raise KeyError(f"{self.path} has no sample {sample!r}") from None

    def __len__(self) -> int:
        return len(self.specs)

    @cached_property
    def _by_sample(self) -> dict[str, SampleSpec]:
        return {spec.sample: spec for spec in self.specs}


def read_samplesheet(path: str | os.PathLike[str]) -> Samplesheet:
    """Read and check a samplesheet: all its samples, or every problem it has.

    Each input is opened to detect its layout (a few kB of each file), so a path that does
    not exist or is not a count matrix is reported here, not when its sample is read.

    Parameters
    ----------
    path
        The CSV file. Paths in it are relative to its folder, or absolute.

    Returns
    -------
    The samplesheet; with a header and no rows, a samplesheet without samples.

    Raises
    ------
    SamplesheetError
        If anything is wrong; it lists every problem with its line and column.
    FileNotFoundError
        If ``path`` does not exist (and OSError if it cannot be read).
    """
    sheet_path = Path(path).absolute()
    problems: list[SheetProblem] = []
    records = _records(_text(sheet_path, path), problems)
    if not records:
        if not problems:
            problems.append(SheetProblem(None, None, "the file is empty: " + _NEEDS_HEADER))
        raise SamplesheetError(path, problems)
    header_line, header = records[0]
    for separator, name in _OTHER_SEPARATORS.items():
        if len(header) == 1 and separator in header[0]:
            problem = f"looks {name}-separated: use commas"
            raise SamplesheetError(path, [SheetProblem(header_line, None, problem)])
    columns = [name.strip() for name in header]
    problems.extend(_header_problems(columns, header_line))
    rows = _RowChecker(columns, sheet_path.parent)
    specs = []
    for line, fields in records[1:]:
        spec, row_problems = rows.check(line, fields)
        problems.extend(row_problems)
        if spec is not None:
            specs.append(spec)
    if problems:
        raise SamplesheetError(path, problems)
    return Samplesheet(sheet_path, tuple(specs), tuple(columns))


_NEEDS_HEADER = "the first line must be the header, with at least the columns sample and path"
_EMPTY_PATH = (
    "empty: every row needs the path of its input (a file or folder, relative to the "
    "samplesheet's folder or absolute)"
)


def _text(sheet_path: Path, given: str | os.PathLike[str]) -> str:
    data = sheet_path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        problem = "is UTF-16 text (Excel's 'Unicode text'): save it as 'CSV UTF-8'"
        raise SamplesheetError(given, [SheetProblem(None, None, problem)])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        byte = data[error.start : error.start + 1].hex()
        problem = f"not UTF-8 text (byte 0x{byte}): save the sheet as 'CSV UTF-8'"
        raise SamplesheetError(given, [SheetProblem(line, None, problem)]) from None


def _records(text: str, problems: list[SheetProblem]) -> list[tuple[int, list[str]]]:
    """The non-blank records of the CSV text, each with the line it starts on."""
    # strict: a stray or unclosed double quote is an error, not a field swallowing the rest
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records = []
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return records
        except csv.Error as error:
            problem = f"not readable as CSV: {error}"
            if str(error) == "unexpected end of data":
                problem = "a double quote opened on this line is never closed"
            problems.append(SheetProblem(line, None, problem))
            return records
        # A line of empty fields (",,,") is blank too: spreadsheets export their empty rows so.
        if any(field.strip() for field in fields):
            records.append((line, fields))


def _header_problems(columns: list[str], line: int) -> Iterator[SheetProblem]:
    first: dict[str, int] = {}
    for position, name in enumerate(columns, start=1):
        if not name:
            yield SheetProblem(line, None, f"column {position} has no name: every column needs one")
        elif name in first:
            problem = (
                f"appears twice (columns {first[name]} and {position}): column names must be unique"
            )
            yield SheetProblem(line, name, problem)
        elif name in RESERVED_COLUMNS:
            yield SheetProblem(line, name, f"reserved: {RESERVED_COLUMNS[name]}; rename the column")
        elif "/" in name or name == ".":
            problem = "anndata cannot store an obs column of this name: rename the column"
            yield SheetProblem(line, name, problem)
        first.setdefault(name, position)
    for name in REQUIRED_COLUMNS:
        if name not in first:
            problem = "required column missing: a samplesheet needs the columns sample and path"
            near = [c for c in first if c.lower() == name]
            if near:
                problem += f" (column names are case-sensitive: {near[0]} is not {name})"
            yield SheetProblem(line, name, problem)


class _RowChecker:
    """Checks the rows of one sheet in order, remembering what must be unique across rows."""

    def __init__(self, columns: list[str], folder: Path) -> None:
        self.n_columns = len(columns)
        self.folder = folder
        self.position: dict[str, int] = {}  # first position of each column name
        for i, name in enumerate(columns):
            self.position.setdefault(name, i)
        self.metadata_columns = [
            name
            for name in self.position
            if name
            and name not in REQUIRED_COLUMNS + OPTION_COLUMNS
            and name not in RESERVED_COLUMNS
        ]
        self.samples: dict[str, int] = {}
        self.folded: dict[str, tuple[str, int]] = {}  # case-folded name -> (sample, line)
        self.labels: dict[str, tuple[str, int]] = {}  # label -> (sample, line)
        self.inputs: dict[tuple[Path, str], tuple[str, int]] = {}  # (input, genome) -> row

    def check(self, line: int, fields: list[str]) -> tuple[SampleSpec | None, list[SheetProblem]]:
        """The row's spec (None if it has problems) and its problems."""
        if len(fields) != self.n_columns:
            problem = f"{len(fields)} fields, but the header has {self.n_columns} columns"
            if len(fields) > self.n_columns:
                problem += " (a value holding a comma must be in double quotes)"
            return None, [SheetProblem(line, None, problem)]
        values = {name: fields[i].strip() for name, i in self.position.items()}
        problems: list[SheetProblem] = []

        def problem(column: str, message: str) -> None:
            problems.append(SheetProblem(line, column, message))

        sample = values.get("sample", "")
        if "sample" in values:
            for message in self._sample_problems(sample, line):
                problem("sample", message)
        options = {name: values.get(name, "") or _DEFAULTS.get(name, "") for name in OPTION_COLUMNS}
        if options["format"] not in ("auto", *FORMATS):
            problem(
                "format",
                f"{options['format']!r} is not a format: use {_listed(('auto', *FORMATS))}",
            )
        if options["orientation"] not in ORIENTATIONS:
            given = options["orientation"]
            problem("orientation", f"{given!r} is not an orientation: use {_listed(ORIENTATIONS)}")

        path = None
        if "path" in values:
            path, source, message = self._input(values["path"])
            if message:
                problem("path", message)
            if source is not None:
                for column, message in self._option_problems(options, source):
                    problem(column, message)
                genome = options["genome"] if source.layout in OPTION_LAYOUTS["genome"] else ""
                key = (path.resolve(), genome)
                other, other_line = self.inputs.setdefault(key, (sample, line))
                if other_line != line:
                    # One input read as two samples would duplicate its cells in the merge; a
                    # file with several genomes (Cell Ranger 1-2) may be one sample per genome.
                    message = (
                        f"{values['path']} is also the input of line {other_line} "
                        f"(sample {other}): an input can be one sample only"
                    )
                    problem("path", message)
        if problems or path is None:
            # In the order of the columns, as a person reads the row.
            problems.sort(key=lambda p: self.position.get(p.column or "", -1))
            return None, problems
        spec = SampleSpec(
            sample=sample,
            path=path,
            format=options["format"],
            orientation=options["orientation"],
            counts_layer=options["counts_layer"] or None,
            genome=options["genome"] or None,
            metadata=tuple((name, values[name] or None) for name in self.metadata_columns),
            categorical=frozenset(self.metadata_columns),
            line=line,
        )
        return spec, []

    def _sample_problems(self, sample: str, line: int) -> Iterator[str]:
        if not sample:
            yield "empty: every row needs a sample name"
            return
        if not SAMPLE_NAME_RE.match(sample):
            yield (
                f"{sample!r} is not a valid sample name: 1 to 64 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit"
            )
            return
        if sample in self.samples:
            first = self.samples[sample]
            yield f"{sample} is already the sample of line {first}: sample names must be unique"
            return
        self.samples[sample] = line
        other, other_line = self.folded.setdefault(sample.casefold(), (sample, line))
        if other_line != line:
            yield (
                f"{sample} and {other} (line {other_line}) differ only in case: sample names are "
                "file names in storage, which may not tell case apart"
            )
            return
        label = sample_label(sample)
        other, other_line = self.labels.setdefault(label, (sample, line))
        if other_line != line:
            yield (
                f"{sample} gives the label {label}, as {other} on line {other_line} does: "
                "labels (obs['sample'] and the cell-name prefix in the merge) must be unique"
            )

    def _input(self, value: str) -> tuple[Path, Source | None, str | None]:
        """The input's absolute path, its detected layout, or what is wrong with it."""
        if not value:
            return self.folder, None, _EMPTY_PATH
        # abspath, not resolve: ".." is collapsed but the symlinks a lab's layout uses stay.
        path = Path(os.path.abspath(self.folder / value))
        try:
            if not path.exists():
                return path, None, f"{value} does not exist"
            # Always detected: a given format is compared below, so that a mismatch is the
            # format column's problem.
            return path, detect_layout(path), None
        except CountMatrixError as error:
            where = "" if Path(error.path) == path else f"{_relative(error.path, path)}: "
            return path, None, where + error.problem
        except OSError as error:
            return path, None, f"{value} cannot be read: {error.strerror or error}"

    def _option_problems(
        self, options: dict[str, str], source: Source
    ) -> Iterator[tuple[str, str]]:
        """Options that contradict the detected layout, or that it would ignore."""
        found = f"{source.detail} ({source.layout})"
        if options["format"] in FORMATS and not format_matches(options["format"], source.layout):
            yield "format", f"given as {options['format']}, but the input is {found}"
        for column, layouts in OPTION_LAYOUTS.items():
            value = options[column]
            if value and value != _DEFAULTS.get(column) and source.layout not in layouts:
                message = f"applies to {_listed(layouts)} inputs only, and this is {found}"
                yield column, message + ": leave it empty"


def _listed(values: Sequence[str]) -> str:
    """``a, b or c``."""
    values = list(values)
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


def _relative(path: str, folder: Path) -> str:
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return path
