"""Which samples a study has: from its samplesheet, or by looking at its data folder.

A study is a samplesheet (``--samplesheet``, ``SC_ASSETS_SAMPLESHEET`` or a ``samplesheet.csv``
in the data folder) or, without one, the data folder itself:

* GEO-named CSVs (``GSM<digits>_<Condition><donor>_count_matrix.csv.gz``) are samples as in
  round 1, with their metadata from the name;
* every other recognised input (an ``.h5``, an ``.h5ad``, an MTX or STARsolo folder, a
  prefixed MTX trio, a Cell Ranger output folder) is a sample named after its file or folder,
  with extensions and Cell Ranger suffixes (``_filtered_feature_bc_matrix``...) stripped;
* anything else is listed as ignored, with the reason.

Pure file-system logic: the CLI's ingest, the sensor and the nightly schedule all use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sc_assets.core.errors import CountMatrixError, SampleNameError
from sc_assets.core.names import EXPECTED_FILE_NAME
from sc_assets.core.remote import local_study
from sc_assets.core.samples import SAMPLE_NAME_RE, SampleSpec, geo_spec

#: Text layouts: any CSV could claim to be one, so a scanned folder takes only GEO names.
_TEXT_LAYOUTS = ("csv", "tsv")
#: The samplesheet a data folder may hold instead of being scanned.
SAMPLESHEET_NAME = "samplesheet.csv"

#: Names never opened in a scanned folder: text (only GEO-named CSVs are samples there) and
#: partial downloads.
_NOT_OPENED = re.compile(r"\.(csv|tsv|txt)(\.gz)?\Z|\.(part|tmp|crdownload)\Z", re.IGNORECASE)
_EXTENSIONS = re.compile(r"(\.(h5ad|h5|hdf5|mtx|csv|tsv|txt))?(\.gz)?\Z", re.IGNORECASE)
#: Cell Ranger's names for a sample's matrix, stripped from the end of a file or folder name.
_CELLRANGER_SUFFIXES = re.compile(
    r"[._-]?(sample_)?(filtered|raw)_(feature_bc_matrix|gene_bc_matrices)(_h5)?\Z"
)
#: Where a Cell Ranger output folder keeps its filtered matrix, in order of preference.
_CELLRANGER_MATRICES = (
    "outs/filtered_feature_bc_matrix.h5",
    "outs/filtered_feature_bc_matrix",
    "filtered_feature_bc_matrix.h5",
    "filtered_feature_bc_matrix",
    "outs/filtered_gene_bc_matrices_h5.h5",
    "outs/filtered_gene_bc_matrices",
)


@dataclass(frozen=True)
class FileStat:
    """One file a sample is read from, as one listing saw it."""

    path: Path
    size: int
    mtime_ns: int
    ctime_ns: int
    """Inode change time: set on create, copy, rename and replace, and not settable by users,
    so it reveals a file dropped in with a preserved (old) modification time."""

    @property
    def identity(self) -> str:
        """Path, size and times: while these stay the same, so does the content (a replaced
        file always gets a new inode change time)."""
        return f"{self.path}|{self.size}|{self.mtime_ns}|{self.ctime_ns}"

    @classmethod
    def of(cls, path: Path) -> FileStat:
        stat = path.stat()
        return cls(path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@dataclass(frozen=True)
class SampleInput:
    """A sample as seen by one scan: its spec, the files it is read from, its sheet row."""

    spec: SampleSpec
    files: tuple[FileStat, ...]
    row_digest: str | None = None
    """SHA-256 of the sample's samplesheet row (everything but the path), or None when the
    sample was found in the data folder."""
    sheet_ctime_ns: int = 0
    """The samplesheet's inode change time: an edited sheet makes every row a candidate."""

    @property
    def partition_key(self) -> str:
        return self.spec.sample

    @property
    def path(self) -> Path:
        return self.spec.path

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def mtime_ns(self) -> int:
        return max(f.mtime_ns for f in self.files)

    @property
    def ctime_ns(self) -> int:
        return max(self.sheet_ctime_ns, *(f.ctime_ns for f in self.files))

    @property
    def signature(self) -> str:
        """Cheap identity of the sample's current version: sizes and mtimes (and its row).

        ``<size>-<mtime_ns>`` for one file found in the data folder, as in round 1.
        """
        text = "|".join(f"{f.size}-{f.mtime_ns}" for f in self.files)
        return text if self.row_digest is None else f"{text}|row:{self.row_digest[:16]}"


@dataclass(frozen=True)
class IgnoredFile:
    """A file or folder of the data folder that is not a sample."""

    name: str
    reason: str
    ctime_ns: int


@dataclass(frozen=True)
class InboxScan:
    """One listing of a study's inputs."""

    samples: dict[str, SampleInput]
    """Partition key -> input, sorted by key."""
    ignored: dict[str, IgnoredFile]
    """Name -> an entry of the data folder that is not a sample (bad name, partial download,
    unknown content...)."""
    samplesheet: Path | None = None
    """The samplesheet the samples come from, or None (the data folder was scanned)."""


def study_samplesheet(data_dir: str | os.PathLike[str], samplesheet: str | None) -> Path | None:
    """The samplesheet of a study: the one given, else ``samplesheet.csv`` in the data folder."""
    if samplesheet:
        return Path(samplesheet)
    default = Path(data_dir) / SAMPLESHEET_NAME
    return default if default.is_file() else None


def scan_inbox(
    data_dir: str | os.PathLike[str], samplesheet: str | os.PathLike[str] | None = None
) -> InboxScan:
    """The samples of a study and, for a scanned folder, what was ignored in it.

    With a samplesheet (given, or ``samplesheet.csv`` in ``data_dir``) the samples are its
    rows, validated as a whole first; otherwise ``data_dir`` is scanned (see the module
    docstring). One ``scandir`` and a ``stat`` per file; only files that are neither GEO-named
    nor plain text are opened, to detect their layout from their first bytes.

    A data folder or samplesheet at a URL (``s3://...``) is looked at in its local mirror
    (:mod:`sc_assets.core.remote`): the listing is remote, only changed objects are fetched.

    Raises
    ------
    SamplesheetError
        If the samplesheet is invalid (every problem is listed); nothing is returned then.
    """
    data_dir, samplesheet = local_study(data_dir, samplesheet)
    sheet = study_samplesheet(data_dir, os.fspath(samplesheet) if samplesheet else None)
    if sheet is not None:
        return _scan_samplesheet(sheet)
    return _scan_folder(Path(data_dir))


def find_sample(
    data_dir: str | os.PathLike[str], samplesheet: str | os.PathLike[str] | None, key: str
) -> SampleInput | None:
    """The input of one sample, or None when the study has no such sample now."""
    data_dir, samplesheet = local_study(data_dir, samplesheet, key)
    if (
        study_samplesheet(data_dir, os.fspath(samplesheet) if samplesheet else None) is None
        and (geo := Path(data_dir) / f"{key}_count_matrix.csv.gz").is_file()
    ):
        with contextlib.suppress(SampleNameError):  # a key that is no GEO name: scan
            return SampleInput(geo_spec(geo), (FileStat.of(geo),))
    return scan_inbox(data_dir, samplesheet).samples.get(key)


def data_version(sample: SampleInput, file_hash: Callable[[FileStat], str]) -> str:
    """The data version of a sample's input: the file's SHA-256 for one file found in the data
    folder (as in round 1); else the SHA-256 of its sheet row and of each file's hash.

    ``file_hash(stat)`` hashes one file (e.g. ``content_hash(stat.path)``, or a cached hash
    for a file whose stat has not changed).
    """
    if sample.row_digest is None and len(sample.files) == 1:
        return file_hash(sample.files[0])
    parts = {
        "row": sample.row_digest,
        "files": [[f.path.name, file_hash(f)] for f in sample.files],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def row_digest(spec: SampleSpec) -> str:
    """SHA-256 of what a samplesheet row says about a sample, its path aside (a moved file
    with the same content is the same data)."""
    described = {k: v for k, v in spec.describe().items() if k != "path"}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def sample_name_for(name: str) -> str:
    """A sample name from a file or folder name: extensions and Cell Ranger suffixes stripped.

    ``pbmc1_filtered_feature_bc_matrix.h5`` -> ``pbmc1``; ``donor7.h5ad`` -> ``donor7``; a
    name that would be empty is kept whole (``filtered_feature_bc_matrix``).
    """
    stem = _EXTENSIONS.sub("", name)
    return _CELLRANGER_SUFFIXES.sub("", stem) or stem or name


# --- samplesheet ------------------------------------------------------------------------


def _scan_samplesheet(sheet_path: Path) -> InboxScan:
    from sc_assets.core.readers import detect_layout
    from sc_assets.core.samplesheet import read_samplesheet

    sheet = read_samplesheet(sheet_path)
    sheet_ctime = sheet_path.stat().st_ctime_ns
    samples: dict[str, SampleInput] = {}
    for spec in sheet.specs:
        try:
            source = detect_layout(spec.path, spec.format)
            files = tuple(FileStat.of(path) for path in source.files.values())
        except (CountMatrixError, OSError):  # changed since the sheet was validated
            continue
        samples[spec.sample] = SampleInput(spec, files, row_digest(spec), sheet_ctime)
    return InboxScan(dict(sorted(samples.items())), {}, samplesheet=sheet_path)


# --- data folder --------------------------------------------------------------------------


def _scan_folder(data_dir: Path) -> InboxScan:
    found: dict[str, list[SampleInput]] = {}
    ignored: dict[str, IgnoredFile] = {}
    consumed: set[str] = set()  # the features and barcodes files of prefixed MTX trios
    entries = sorted(os.scandir(data_dir), key=lambda e: e.name)
    for prefix, matrix in _trios(data_dir).items():
        sample = _detected(matrix, sample_name_for(prefix), ignored)
        if sample is not None:
            found.setdefault(sample.partition_key, []).append(sample)
            consumed.update(f.path.name for f in sample.files)
    for entry in entries:
        if entry.name in consumed:
            continue
        try:
            stat = entry.stat()
            is_dir = entry.is_dir()
        except FileNotFoundError:  # removed between listing and stat
            continue
        if entry.name.startswith("."):
            reason = "hidden: skipped (a download or copy in progress?)"
            ignored[entry.name] = IgnoredFile(entry.name, reason, stat.st_ctime_ns)
            continue
        sample = None
        path = Path(entry.path)
        if not is_dir:
            try:
                spec = geo_spec(path)
            except SampleNameError as error:
                if _NOT_OPENED.search(entry.name):
                    reason = f"{error}; or list it in a samplesheet to ingest it under any name"
                    ignored[entry.name] = IgnoredFile(entry.name, reason, stat.st_ctime_ns)
                    continue
            else:
                file = FileStat(path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
                sample = SampleInput(spec, (file,))
        if sample is None:
            sample = _detected(path, sample_name_for(entry.name), ignored, stat.st_ctime_ns)
        if sample is not None:
            found.setdefault(sample.partition_key, []).append(sample)
    samples: dict[str, SampleInput] = {}
    for key, candidates in found.items():
        if len(candidates) == 1:
            samples[key] = candidates[0]
            continue
        names = [c.path.name for c in candidates]
        for candidate in candidates:
            reason = f"{', '.join(names)} would all be sample {key!r}: rename all but one"
            ignored[candidate.path.name] = IgnoredFile(
                candidate.path.name, reason, max(f.ctime_ns for f in candidate.files)
            )
    return InboxScan(dict(sorted(samples.items())), dict(sorted(ignored.items())))


def _detected(
    path: Path, name: str, ignored: dict[str, IgnoredFile], ctime_ns: int | None = None
) -> SampleInput | None:
    """The sample ``path`` holds, by content; else None, with the reason in ``ignored``."""
    from sc_assets.core.readers import detect_layout

    if ctime_ns is None:
        ctime_ns = path.stat().st_ctime_ns
    try:
        source = detect_layout(path)
    except CountMatrixError as error:
        source = _cellranger_output(path) if path.is_dir() else None
        if source is None:
            ignored[path.name] = IgnoredFile(path.name, error.problem, ctime_ns)
            return None
    if source.layout in _TEXT_LAYOUTS:
        reason = (
            f"{source.detail}: in a scanned data folder only GEO-named CSVs "
            f"({EXPECTED_FILE_NAME}) are samples; list it in a samplesheet to ingest it"
        )
        ignored[path.name] = IgnoredFile(path.name, reason, ctime_ns)
        return None
    if not SAMPLE_NAME_RE.match(name):
        reason = (
            f"{name!r} cannot be a sample name (letters, digits, '.', '_' and '-', at most 64, "
            "starting with a letter or digit): rename it, or list it in a samplesheet"
        )
        ignored[path.name] = IgnoredFile(path.name, reason, ctime_ns)
        return None
    spec = SampleSpec(sample=name, path=source.path.absolute(), format=source.layout)
    try:
        files = tuple(FileStat.of(p) for p in source.files.values())
    except FileNotFoundError:
        return None
    return SampleInput(spec, files)


def _cellranger_output(folder: Path):
    """The filtered matrix inside a Cell Ranger output folder (``<sample>/outs/...``)."""
    from sc_assets.core.readers import detect_layout

    for relative in _CELLRANGER_MATRICES:
        candidate = folder / relative
        if candidate.exists():
            try:
                return detect_layout(candidate)
            except CountMatrixError:
                continue
    return None


def _trios(data_dir: Path) -> dict[str, Path]:
    from sc_assets.core.readers.mtx import find_trios

    return find_trios(data_dir)
