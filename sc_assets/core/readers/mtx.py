"""Matrix Market count matrices: 10x MTX folders (v3, v2), prefixed GEO trios and STARsolo.

A sample is a trio of files: ``matrix.mtx`` (genes x cells, Matrix Market coordinate format),
``features.tsv`` (v3: id, name, feature type) or ``genes.tsv`` (v2: id, name), and
``barcodes.tsv``, each gzipped or not. The trio is found

* in a 10x folder (``filtered_feature_bc_matrix/``, or one genome subfolder of Cell Ranger 2's
  ``filtered_gene_bc_matrices/``: ``ReadOptions.genome`` picks it);
* in STARsolo's ``Solo.out/Gene/filtered`` (given as that folder, ``Solo.out/Gene``,
  ``Solo.out`` or the STAR output folder holding ``Solo.out``);
* side by side with a common prefix, as GEO serves them (``GSM123_matrix.mtx.gz``,
  ``GSM123_features.tsv.gz``, ``GSM123_barcodes.tsv.gz``), named by the matrix file or by a
  folder holding exactly one trio (:func:`find_trios` lists a folder's trios).

The entries are parsed by scipy's Matrix Market reader (fast_matrix_market: C++, threaded),
fed by ISA-L for gzip (half the time of the stdlib's gzip), and become the contract's CSR in
place (:mod:`._mtx_entries`, numba, imported only when a matrix is read): the peak memory is
that of the result, X and its counts copy (16 bytes an entry).

A full-size sample (33,538 genes x 9,000 cells, 15.4 M entries, 57 MB gzipped) reads in 1.1-1.5 s
with a 266 MB peak; ``scanpy.read_10x_mtx`` takes 4.3-5.2 s and 900 MB (fresh processes, 2 busy
cores).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import scipy.sparse as sp

# scipy's public mmread allocates the values by the header's field: int64 for "integer", into
# which fast_matrix_market parses "2.5" as 2 without a word. The cursor API underneath (stable
# since scipy 1.12) lets us parse every field as float64 instead, so a non-integer count is seen.
from scipy.io import _fast_matrix_market as _fmm
from scipy.io._fast_matrix_market import _fmm_core

from sc_assets.core._decompress import DECODER, _stream_problem
from sc_assets.core.errors import CountMatrixError
from sc_assets.core.readers._contract import GENE_EXPRESSION, CountData, Features
from sc_assets.core.readers._source import GZIP_MAGIC, ReadOptions, Source, read_head

__all__ = ["LAYOUTS", "detect", "find_trios", "read", "read_gene_names"]

LAYOUTS = ("10x_mtx", "starsolo")

_BANNER = b"%%MatrixMarket"
_MATRIX = "matrix.mtx"
_SEPARATORS = "_-."
_SOLO_OUT = "Solo.out"
#: STARsolo feature folders with a gene count matrix, in order of preference.
_SOLO_FEATURES = ("Gene", "GeneFull")


@dataclass(frozen=True)
class _Trio:
    """The three files of one sample."""

    matrix: Path
    features: Path
    barcodes: Path

    @property
    def version(self) -> int:
        """3 for a ``features.tsv``, 2 for a Cell Ranger 2 ``genes.tsv``."""
        return 2 if self.features.name.removesuffix(".gz").endswith("genes.tsv") else 3

    def files(self, role_prefix: str = "") -> dict[str, Path]:
        roles = ("matrix", "features", "barcodes")
        return {role_prefix + role: getattr(self, role) for role in roles}


# --- detect ------------------------------------------------------------------------------


def detect(path: Path, head: bytes) -> Source | None:
    """A 10x MTX folder or trio, or STARsolo's output; None for anything else.

    Raises :class:`CountMatrixError` for an input that is clearly Matrix Market but cannot be
    read as one sample (a matrix without its features or barcodes, a folder of several trios,
    a ``Solo.out`` without ``Gene/filtered``): the message says what was found, which a
    ``None`` would leave to a generic "not a supported count matrix".
    """
    if path.is_dir():
        return _detect_folder(path)
    if not head.startswith(_BANNER):
        return None
    base = path.name.removesuffix(".gz")
    if not base.endswith(_MATRIX):
        problem = (
            "a Matrix Market file, but its features and barcodes cannot be found: the reader "
            f"looks for them next to a file named [prefix]{_MATRIX}[.gz]"
        )
        raise CountMatrixError(path, problem)
    prefix = base.removesuffix(_MATRIX)
    trio = _Trio(path, *_siblings(path, prefix))
    return _source(path, trio, _trio_detail(trio, prefix, path.parent))


def find_trios(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """The prefixed MTX trios lying side by side in ``folder``: prefix -> matrix file.

    A trio is ``<prefix>matrix.mtx[.gz]`` with ``<prefix>features.tsv[.gz]`` (or
    ``genes.tsv``) and ``<prefix>barcodes.tsv[.gz]``; the key is the prefix without its
    trailing separator (``GSM123_Ctrl1`` for ``GSM123_Ctrl1_matrix.mtx.gz``). Unprefixed files
    (a 10x folder's own trio) and matrices missing a sibling are not listed. Names only: the
    content is checked when a trio is read.
    """
    names = {p.name for p in Path(folder).iterdir() if p.is_file()}

    def has(name: str) -> bool:
        return name in names or name + ".gz" in names

    trios: dict[str, Path] = {}
    for name in sorted(names):
        base = name.removesuffix(".gz")
        prefix = base.removesuffix(_MATRIX)
        if prefix == base or not prefix:
            continue
        features = has(prefix + "features.tsv") or has(prefix + "genes.tsv")
        key = prefix.rstrip(_SEPARATORS) or prefix
        if features and has(prefix + "barcodes.tsv") and key not in trios:
            trios[key] = Path(folder) / name
    return trios


def _detect_folder(path: Path) -> Source | None:
    solo = _solo_folder(path)
    if solo is not None:
        trio = _folder_trio(solo)
        if trio is None:
            raise CountMatrixError(path, f"a STARsolo folder, but {solo} holds no matrix.mtx")
        return _source(path, trio, f"a STARsolo {_solo_part(solo)} folder")
    trio = _folder_trio(path)
    if trio is not None:
        return _source(path, trio, _trio_detail(trio, "", path))
    subfolders = {sub.name: t for sub in sorted(path.iterdir()) if (t := _subfolder_trio(sub))}
    if any(t.version == 3 for t in subfolders.values()):
        shown = ", ".join(name + "/" for name in subfolders)
        problem = f"a folder of MTX folders ({shown}): name the folder of one sample"
        raise CountMatrixError(path, problem)
    genomes = subfolders  # Cell Ranger 2 wrote one folder per genome
    if len(genomes) == 1:
        ((genome, trio),) = genomes.items()
        return _source(path, trio, f"a Cell Ranger 2 MTX folder (genome {genome})")
    if genomes:
        files = {k: v for genome, t in genomes.items() for k, v in t.files(genome + "/").items()}
        detail = f"a Cell Ranger 2 MTX folder with genomes {', '.join(genomes)}"
        return Source("10x_mtx", path, files, detail, {"genomes": genomes})
    trios = find_trios(path)
    if len(trios) > 1:
        shown = ", ".join(m.name for m in trios.values())
        problem = (
            f"a folder holding {len(trios)} prefixed MTX trios ({shown}): name one sample's "
            "matrix file (or let the data-folder scan make one sample per trio)"
        )
        raise CountMatrixError(path, problem)
    if trios:
        ((matrix),) = trios.values()
        if read_head(matrix).startswith(_BANNER):
            prefix = matrix.name.removesuffix(".gz").removesuffix(_MATRIX)
            trio = _Trio(matrix, *_siblings(matrix, prefix))
            return _source(path, trio, _trio_detail(trio, prefix, path))
    return None


def _source(path: Path, trio: _Trio, detail: str) -> Source:
    layout = "starsolo" if _in_solo_out(trio.matrix.parent) else "10x_mtx"
    return Source(layout, path, trio.files(), detail, {"genomes": {"": trio}})


def _trio_detail(trio: _Trio, prefix: str, folder: Path) -> str:
    if _in_solo_out(folder):
        return f"a STARsolo {_solo_part(folder)} folder"
    if prefix:
        return f"a prefixed MTX trio {prefix}..."
    return f"a 10x MTX v{trio.version} folder"


def _folder_trio(folder: Path) -> _Trio | None:
    """The unprefixed trio of ``folder``, None if it has no matrix (raises if it is partial)."""
    matrix = _one_of(folder, _MATRIX)
    if matrix is None:
        return None
    if not read_head(matrix).startswith(_BANNER):
        raise CountMatrixError(matrix, "not a Matrix Market file: no %%MatrixMarket header")
    return _Trio(matrix, *_siblings(matrix, ""))


def _subfolder_trio(folder: Path) -> _Trio | None:
    """The trio of a subfolder, as Cell Ranger 2 wrote one per genome (``hg19/``)."""
    if not folder.is_dir() or _one_of(folder, _MATRIX) is None:
        return None
    return _folder_trio(folder)


def _siblings(matrix: Path, prefix: str) -> tuple[Path, Path]:
    """The features and barcodes files next to ``matrix``; raises naming what is missing."""
    folder = matrix.parent
    features = _one_of(folder, prefix + "features.tsv")
    genes = _one_of(folder, prefix + "genes.tsv")
    if features is not None and genes is not None:
        problem = f"both {features.name} and {genes.name} lie next to it: keep one"
        raise CountMatrixError(matrix, problem)
    features = features or genes
    barcodes = _one_of(folder, prefix + "barcodes.tsv")
    missing = []
    if features is None:
        missing.append(f"{prefix}features.tsv[.gz] (or {prefix}genes.tsv[.gz])")
    if barcodes is None:
        missing.append(f"{prefix}barcodes.tsv[.gz]")
    if features is None or barcodes is None:
        problem = (
            f"a Matrix Market file, but {' and '.join(missing)} not found next to it in "
            f"{folder}: an MTX sample needs its features and barcodes files"
        )
        raise CountMatrixError(matrix, problem)
    return features, barcodes


def _one_of(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists; raises if both do."""
    plain, gz = folder / name, folder / (name + ".gz")
    if plain.is_file() and gz.is_file():
        raise CountMatrixError(folder, f"both {name} and {name}.gz: keep one")
    return plain if plain.is_file() else gz if gz.is_file() else None


def _solo_folder(path: Path) -> Path | None:
    """The matrix folder a STARsolo path stands for, None if ``path`` is not STARsolo's."""
    if (path / _SOLO_OUT).is_dir():
        path = path / _SOLO_OUT
    if path.name == _SOLO_OUT:
        feature = next((path / f for f in _SOLO_FEATURES if (path / f).is_dir()), None)
        if feature is None:
            found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
            expected = " or ".join(_SOLO_FEATURES)
            problem = f"a STARsolo Solo.out folder without {expected}/filtered (found {found})"
            raise CountMatrixError(path, problem)
        path = feature
    if path.parent.name == _SOLO_OUT and _one_of(path, _MATRIX) is None:
        if not (path / "filtered").is_dir():
            problem = "a STARsolo feature folder without filtered/ (run STARsolo with filtering)"
            raise CountMatrixError(path, problem)
        path = path / "filtered"
    return path if _in_solo_out(path) else None


def _in_solo_out(folder: Path) -> bool:
    return _SOLO_OUT in folder.parts


def _solo_part(folder: Path) -> str:
    parts = folder.parts
    return "/".join(parts[len(parts) - 1 - parts[::-1].index(_SOLO_OUT) :])


# --- read --------------------------------------------------------------------------------


def read(source: Source, options: ReadOptions) -> CountData:
    """The counts, barcodes and features of ``source`` (see the module docstring).

    Raises
    ------
    CountMatrixError
        For a header that is not a sparse count matrix, an entry out of range, a missing
        entry, a negative or non-integer count, features or barcodes that do not match the
        matrix, a repeated barcode, a damaged gzip stream: naming the file and, where there is
        one, the line.
    """
    trio = _chosen_trio(source, options)
    with _matrix_cursor(trio.matrix) as cursor:
        n_genes, n_cells = cursor.header.nrows, cursor.header.ncols
        features = _read_features(trio.features)
        barcodes = _read_lines(trio.barcodes)
        _check_shape(trio, n_genes, n_cells, len(features.names), len(barcodes))
        _check_unique(trio.barcodes, barcodes)
        X = _read_entries(trio.matrix, cursor)
    notes = {"genome": options.genome} if len(_trios(source)) > 1 else {}
    return CountData(source.path, source.layout, barcodes, features, X, notes=notes)


def read_gene_names(source: Source, options: ReadOptions) -> list[str]:
    """The Gene Expression feature names of the features file, duplicates kept."""
    features = _read_features(_chosen_trio(source, options).features)
    if features.types is None:
        return features.names
    return [n for n, t in zip(features.names, features.types, strict=True) if t == GENE_EXPRESSION]


def _trios(source: Source) -> dict[str, _Trio]:
    return source.extra["genomes"]  # type: ignore[return-value]


def _chosen_trio(source: Source, options: ReadOptions) -> _Trio:
    trios = _trios(source)
    if len(trios) == 1:
        return next(iter(trios.values()))
    names = ", ".join(trios)
    if options.genome is None:
        problem = (
            f"this Cell Ranger 2 folder holds one matrix per genome ({names}): add a genome "
            "column to the samplesheet to pick one"
        )
        raise CountMatrixError(source.path, problem)
    if options.genome not in trios:
        problem = f"no genome {options.genome!r} in this Cell Ranger 2 folder (found: {names})"
        raise CountMatrixError(source.path, problem)
    return trios[options.genome]


@contextlib.contextmanager
def _matrix_cursor(path: Path):
    """fast_matrix_market's read cursor on ``path`` (through ISA-L for gzip), header checked."""
    with _text_stream(path, buffered=False) as stream:
        # the parser's threads: all cores by default, threadpoolctl can limit them
        threads = _fmm.PARALLELISM
        with _fmm_errors(path):
            if stream is None:  # not gzip: the C++ reader reads the file itself
                cursor = _fmm_core.open_read_file(os.fspath(path), threads)
            else:
                cursor = _fmm_core.open_read_stream(stream, threads)
        try:
            header = cursor.header
            kind = f"{header.object} {header.format} {header.field} {header.symmetry}"
            if kind not in ("matrix coordinate integer general", "matrix coordinate real general"):
                problem = (
                    f"the header declares a Matrix Market {kind}, not a count matrix (expected "
                    "matrix coordinate integer general, as Cell Ranger writes)"
                )
                raise CountMatrixError(path, problem, line=1)
            yield cursor
        finally:
            # Before the stream closes: a cursor destroyed after its stream is closed aborts
            # the process (pybind11 raises in the C++ destructor), and an error's traceback
            # can keep this one alive until any later garbage collection.
            cursor.close()


_FMM_LINE = re.compile(r"^Line (\d+): (.*)$", re.DOTALL)
_FMM_TRUNCATED = re.compile(r"Truncated file\. Expected another (\d+) lines")


@contextlib.contextmanager
def _fmm_errors(path: Path, header=None):
    """Turn fast_matrix_market's errors into CountMatrixErrors naming the file and line.

    ``header`` is None while the header is read, the cursor's header while the entries are.
    """
    try:
        yield
    except (ValueError, OverflowError) as error:
        if isinstance(error, CountMatrixError):
            raise
        message = str(error).rstrip(".")
        if (found := _FMM_LINE.match(message)) is not None:
            problem = found[2][:1].lower() + found[2][1:]
            if header is not None and "out of bounds" in problem:
                problem += f" (the size line declares {header.nrows:,} x {header.ncols:,})"
            raise CountMatrixError(path, problem, line=int(found[1])) from error
        if header is None:
            # The size line (rows, columns, entries) is the one line fast_matrix_market gives
            # no number for: the first line after the % comments.
            problem = f"bad size line, expected 'rows columns entries' ({message})"
            raise CountMatrixError(path, problem, line=_size_line(path)) from error
        if (found := _FMM_TRUNCATED.search(message)) is not None:
            read = header.nnz - int(found[1])
            problem = (
                f"the file ends after {read:,} of the {header.nnz:,} entries its size line "
                "announces: truncated?"
            )
            raise CountMatrixError(path, problem) from error
        raise CountMatrixError(path, message) from error


def _size_line(path: Path) -> int | None:
    lines = read_head(path).split(b"\n")
    return next((n for n, line in enumerate(lines, 1) if not line.startswith(b"%")), None)


def _read_entries(path: Path, cursor) -> sp.csr_matrix:
    """The entries as a cells x genes canonical CSR (float32, int32)."""
    from sc_assets.core.readers import _mtx_entries  # numba: loaded when a matrix is read

    header = cursor.header
    n_genes, n_cells = header.nrows, header.ncols
    if max(n_genes, n_cells) >= 2**31:
        problem = f"{n_genes:,} x {n_cells:,}: more than 2**31 - 1 genes or cells"
        raise CountMatrixError(path, problem, line=_size_line(path))
    try:
        with _fmm_errors(path, header):
            return _mtx_entries.read_csr(cursor)
    except _mtx_entries.NotACount as bad:
        what = "negative" if bad.value < 0 else "not a whole number"
        problem = f"entry {bad.entry + 1:,} has count {bad.value:g}, {what}: not a raw count matrix"
        raise CountMatrixError(path, problem, line=_entry_line(path, bad.entry)) from None


def _entry_line(path: Path, entry: int) -> int | None:
    """The line of the ``entry``-th entry (0-based), counting the header and blank lines."""
    with _text_stream(path) as stream:
        seen = -2  # the size line comes first
        for number, line in enumerate(stream, 1):
            if line.startswith(b"%") or not line.strip():
                continue
            seen += 1
            if seen == entry:
                return number
    return None


# --- features and barcodes ---------------------------------------------------------------


@contextlib.contextmanager
def _text_stream(path: Path, *, buffered: bool = True):
    """A binary stream of ``path``'s content, decompressed when it is gzip.

    With ``buffered=False`` it is None for a file that is not gzip (the caller opens it) and
    the decoder's raw stream otherwise. A damaged gzip stream raises CountMatrixError.
    """
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(open(path, "rb"))
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            stream = raw if buffered else None
        else:
            stream = stack.enter_context(DECODER.open(raw))
            if buffered:
                stream = io.BufferedReader(stream, 1 << 20)
        try:
            yield stream
        except (EOFError, gzip.BadGzipFile, DECODER.error) as error:
            raise CountMatrixError(path, _stream_problem(error)) from error


def _read_lines(path: Path) -> list[str]:
    """The lines of a small text file (gzipped or not), UTF-8, without line ends."""
    with _text_stream(path) as stream:
        data = stream.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise CountMatrixError(path, f"not UTF-8 text ({error.reason})", line=line) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    if "" in lines:
        line = lines.index("") + 1
        raise CountMatrixError(path, "empty line: one name per line expected", line=line)
    return lines


def _read_features(path: Path) -> Features:
    """ids, names and types of a features/genes file, by its number of columns."""
    rows = [line.split("\t") for line in _read_lines(path)]
    width = len(rows[0]) if rows else 1
    for number, row in enumerate(rows, 1):
        if len(row) != width:
            problem = (
                f"{len(row)} tab-separated columns where line 1 has {width} "
                "(expected id, name[, feature type])"
            )
            raise CountMatrixError(path, problem, line=number)
    if width == 1:
        return Features(names=[row[0] for row in rows])
    ids, names = [row[0] for row in rows], [row[1] for row in rows]
    if width == 2:
        return Features(names=names, ids=ids)
    return Features(names=names, ids=ids, types=[row[2] for row in rows])


def _check_shape(trio: _Trio, n_genes: int, n_cells: int, n_features: int, n_barcodes: int):
    if n_features != n_genes:
        problem = (
            f"{trio.features.name} lists {n_features:,} features but {trio.matrix.name} has "
            f"{n_genes:,} rows (features)"
        )
        raise CountMatrixError(trio.features, problem)
    if n_barcodes != n_cells:
        problem = (
            f"{trio.barcodes.name} lists {n_barcodes:,} barcodes but {trio.matrix.name} has "
            f"{n_cells:,} columns (cells)"
        )
        raise CountMatrixError(trio.barcodes, problem)


def _check_unique(path: Path, barcodes: list[str]) -> None:
    if len(set(barcodes)) == len(barcodes):
        return
    seen: dict[str, int] = {}
    for number, barcode in enumerate(barcodes, 1):
        first = seen.setdefault(barcode, number)
        if first != number:
            problem = f"barcode {barcode!r} is on lines {first:,} and {number:,}: must be unique"
            raise CountMatrixError(path, problem, line=number)
