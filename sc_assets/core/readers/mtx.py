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
fed by ISA-L for gzip (half the time of the stdlib's gzip). Its output, coordinates and float64
values (16 bytes an entry), becomes the contract's CSR in place: Cell Ranger writes the entries
grouped by cell with genes descending, so the CSR is those arrays with each cell's run reversed
(R's ``writeMM`` and scipy's ``mmwrite`` order, genes ascending, needs nothing), and the float32
counts go into the buffer of the cell coordinates, which indptr replaces. The peak memory is
thus that of the result, X and its counts copy (also 16 bytes an entry). Entries in any other
order are sorted in place first, repeated ones summed.

A full-size sample (33,538 genes x 9,000 cells, 15.4 M entries, 57 MB gzipped) reads in 2.4-3.2 s
with a 280 MB peak; ``scanpy.read_10x_mtx`` takes 7.5 s and 940 MB (medians on 2 busy cores).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp
from isal import isal_zlib

# scipy's public mmread allocates the values by the header's field: int64 for "integer", into
# which fast_matrix_market parses "2.5" as 2 without a word. The cursor API underneath (stable
# since scipy 1.12) lets us parse every field as float64 instead, so a non-integer count is seen.
from scipy.io import _fast_matrix_market as _fmm
from scipy.io._fast_matrix_market import _fmm_core

from sc_assets.core._decompress import DECODER, _stream_problem
from sc_assets.core.atomic import atomic_path
from sc_assets.core.errors import CountMatrixError
from sc_assets.core.qc import MT_PREFIX, CountSums
from sc_assets.core.readers._contract import GENE_EXPRESSION, CountData, Features
from sc_assets.core.readers._source import GZIP_MAGIC, ReadOptions, Source, read_head

__all__ = ["LAYOUTS", "detect", "find_trios", "read", "read_gene_names", "write_10x_mtx"]

LAYOUTS = ("10x_mtx", "starsolo")

_BANNER = b"%%MatrixMarket"
_MATRIX = "matrix.mtx"
_SEPARATORS = "_-."
_SOLO_OUT = "Solo.out"
#: STARsolo feature folders with a gene count matrix, in order of preference.
_SOLO_FEATURES = ("Gene", "GeneFull")
_JIT = {"nogil": True, "cache": True}


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
        flagged = np.fromiter((n.startswith(MT_PREFIX) for n in features.names), bool, n_genes)
        X, sums = _read_entries(trio.matrix, cursor, flagged)
    notes = {"genome": options.genome} if len(_trios(source)) > 1 else {}
    return CountData(source.path, source.layout, barcodes, features, X, sums=sums, notes=notes)


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


def _read_entries(path: Path, cursor, flagged: np.ndarray) -> tuple[sp.csr_matrix, CountSums]:
    """The entries as a cells x genes canonical CSR (float32, int32) and its QC sums."""
    header = cursor.header
    n_genes, n_cells, nnz = header.nrows, header.ncols, header.nnz
    if max(n_genes, n_cells) >= 2**31:
        problem = f"{n_genes:,} x {n_cells:,}: more than 2**31 - 1 genes or cells"
        raise CountMatrixError(path, problem, line=_size_line(path))
    rows = np.empty(nnz, np.int32)
    cols = np.empty(nnz, np.int32)
    values = np.empty(nnz, np.float64)
    with _fmm_errors(path, header):
        _fmm_core.read_body_coo(cursor, rows, cols, values)
    indptr = np.zeros(n_cells + 1, np.int64)
    bad, order = _scan(rows, cols, values, indptr)
    if bad >= 0:
        value = values[bad]
        what = "negative" if value < 0 else "not a whole number"
        problem = f"entry {bad + 1:,} has count {value:g}, {what}: not a raw count matrix"
        raise CountMatrixError(path, problem, line=_entry_line(path, bad))
    if order == _UNSORTED:
        nnz = _sort_entries(rows, cols, values, indptr)
    np.cumsum(indptr, out=indptr)
    # The float32 counts take the place of the cell coordinates, which indptr now holds.
    data = cols.view(np.float32)
    cell_totals = np.zeros((2, n_cells), np.float64)  # all genes, flagged genes
    gene_nnz = np.zeros(n_genes, np.int64)
    gene_total = np.zeros(n_genes, np.float64)
    descending = order == _DESCENDING
    _finish(rows, values, indptr, descending, data, flagged, cell_totals, gene_nnz, gene_total)
    del values, cols
    if nnz < rows.size:  # repeated entries were summed: release the tail
        rows, data = rows[:nnz].copy(), data[:nnz].copy()
    pointer = np.int32 if nnz < 2**31 else np.int64
    X = sp.csr_matrix(
        (data, rows.astype(pointer, copy=False), indptr.astype(pointer)),
        shape=(n_cells, n_genes),
    )
    X.has_sorted_indices = True
    X.has_canonical_format = True
    # rounded as csr_sums rounds its float64 sums of the float32 counts
    cell_total, cell_flagged = np.rint(cell_totals).astype(np.int64)
    sums = CountSums(
        cell_nnz=np.diff(indptr),
        cell_total=cell_total,
        cell_flagged_total=cell_flagged,
        gene_nnz=gene_nnz,
        gene_total=np.rint(gene_total).astype(np.int64),
        gene_flagged=flagged,
    )
    return X, sums


_DESCENDING, _ASCENDING, _UNSORTED = 0, 1, 2


@numba.njit(**_JIT)
def _scan(rows, cols, values, counts):
    """One pass: the first value that is no count (-1 if none), the order, entries per cell.

    ``counts[c + 1]`` gets the entries of cell ``c``. The order is ``_DESCENDING`` when the
    entries are grouped by cell with genes in strictly descending order (Cell Ranger's),
    ``_ASCENDING`` for strictly ascending, else ``_UNSORTED`` (including repeated entries).
    """
    descending = ascending = True
    for k in range(rows.size):
        value = values[k]
        if not (value >= 0 and value == np.floor(value) and value < np.inf):
            return k, _UNSORTED
        counts[cols[k] + 1] += 1
        if k > 0 and (descending or ascending):
            if cols[k] < cols[k - 1]:
                descending = ascending = False
            elif cols[k] == cols[k - 1]:
                descending = descending and rows[k] < rows[k - 1]
                ascending = ascending and rows[k] > rows[k - 1]
    return -1, _DESCENDING if descending else _ASCENDING if ascending else _UNSORTED


@numba.njit(**_JIT)
def _sort_entries(rows, cols, values, counts):
    """Sort the entries by cell then gene in place, summing repeats; returns the entries left.

    An in-place counting sort (each entry is swapped straight into its cell's run), so no
    array the size of the matrix is allocated; ``counts`` (entries per cell, shifted by one as
    :func:`_scan` leaves it) is updated for the summed repeats.
    """
    n_cells = counts.size - 1
    starts = np.cumsum(counts)
    next_free = starts[:-1].copy()
    for c in range(n_cells):
        while next_free[c] < starts[c + 1]:
            k = next_free[c]
            home = cols[k]
            if home == c:
                next_free[c] += 1
                continue
            target = next_free[home]
            next_free[home] += 1
            rows[k], rows[target] = rows[target], rows[k]
            cols[k], cols[target] = cols[target], cols[k]
            values[k], values[target] = values[target], values[k]
    kept = 0
    for c in range(n_cells):
        start, stop = starts[c], starts[c + 1]
        order = np.argsort(rows[start:stop], kind="mergesort")
        run_rows = rows[start:stop][order]
        run_values = values[start:stop][order]
        first = kept
        for t in range(run_rows.size):
            if kept > first and rows[kept - 1] == run_rows[t]:
                values[kept - 1] += run_values[t]
            else:
                rows[kept] = run_rows[t]
                values[kept] = run_values[t]
                kept += 1
        counts[c + 1] = kept - first
    return kept


@numba.njit(**_JIT)
def _finish(rows, values, indptr, descending, data, flagged, cell_totals, gene_nnz, gene_total):
    """Make the CSR in place (reverse each cell's genes if ``descending``), cast the values
    into ``data`` (float32) and take the QC sums on the way."""
    for c in range(indptr.size - 1):
        start, stop = indptr[c], indptr[c + 1]
        if descending:
            for t in range((stop - start) // 2):
                a, b = start + t, stop - 1 - t
                rows[a], rows[b] = rows[b], rows[a]
        total = 0.0
        flagged_total = 0.0
        for k in range(start, stop):
            value = np.float32(values[stop - 1 - (k - start)] if descending else values[k])
            data[k] = value
            gene = rows[k]
            total += value
            if flagged[gene]:
                flagged_total += value
            gene_nnz[gene] += 1
            gene_total[gene] += value
        cell_totals[0, c] = total
        cell_totals[1, c] = flagged_total


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


# --- write -------------------------------------------------------------------------------


def write_10x_mtx(
    folder_or_prefix: str | os.PathLike[str],
    X: sp.spmatrix | sp.sparray | np.ndarray,
    barcodes: Sequence[str],
    gene_ids: Sequence[str],
    gene_names: Sequence[str],
    *,
    feature_types: Sequence[str] | None = None,
    version: int = 3,
    compress: bool | None = None,
    prefix: str = "",
) -> dict[str, Path]:
    """Write cells x genes counts as Cell Ranger writes an MTX folder.

    Parameters
    ----------
    folder_or_prefix
        The folder to write into (created if missing), or a path prefix ending in ``_``,
        ``-`` or ``.`` (``data/GSM123_`` writes ``data/GSM123_matrix.mtx.gz``...).
    X
        Cells x genes counts (sparse or dense), whole non-negative numbers.
    barcodes, gene_ids, gene_names
        One per cell, one per gene, one per gene.
    feature_types
        v3's third column; ``"Gene Expression"`` for every gene when None.
    version
        3: ``matrix.mtx``, ``features.tsv`` (id, name, type) and ``barcodes.tsv``; 2: Cell Ranger
        2's ``genes.tsv`` (id, name) instead of ``features.tsv``.
    compress
        gzip the three files; default as Cell Ranger does: v3 gzipped, v2 not (which is what
        ``scanpy.read_10x_mtx`` expects of each).
    prefix
        Prepended to the three file names inside the folder.

    Returns
    -------
    Role (``matrix``, ``features``, ``barcodes``) -> path written. The matrix is ``integer
    general``, genes x cells, its entries grouped by cell with genes in descending order (Cell
    Ranger's order); each file is replaced atomically.
    """
    if version not in (2, 3):
        raise ValueError(f"version must be 2 or 3, got {version}")
    compress = version == 3 if compress is None else compress
    target = Path(folder_or_prefix)
    if str(folder_or_prefix).endswith(tuple(_SEPARATORS)) and not target.is_dir():
        folder, prefix = target.parent, target.name + prefix
    else:
        folder = target
    csr = sp.csr_matrix(X, copy=True)
    csr.sum_duplicates()
    n_cells, n_genes = csr.shape
    values = csr.data
    if values.size and not (values.min() >= 0 and np.array_equal(values, np.floor(values))):
        raise ValueError("X must hold whole non-negative counts")
    for what, names, n in (("barcodes", barcodes, n_cells), ("gene_ids", gene_ids, n_genes)):
        if len(names) != n:
            raise ValueError(f"{len(names)} {what} for a matrix of shape {csr.shape}")
    if len(gene_names) != n_genes:
        raise ValueError(f"{len(gene_names)} gene_names for a matrix of shape {csr.shape}")
    columns = [barcodes, gene_ids, gene_names, feature_types or []]
    if any(c in name for names in columns for name in names for c in "\t\n\r"):
        raise ValueError("names must not contain tabs or line breaks")
    if version == 3:
        types = feature_types if feature_types is not None else [GENE_EXPRESSION] * n_genes
        feature_rows = zip(gene_ids, gene_names, types, strict=True)
    else:
        feature_rows = zip(gene_ids, gene_names, strict=True)
    suffix = ".gz" if compress else ""
    written = {
        role: folder / f"{prefix}{name}{suffix}"
        for role, name in (
            ("matrix", _MATRIX),
            ("features", "features.tsv" if version == 3 else "genes.tsv"),
            ("barcodes", "barcodes.tsv"),
        )
    }
    comment = '%metadata_json: {"format_version": 2}' if version == 3 else "%"
    header = f"{_BANNER.decode()} matrix coordinate integer general\n{comment}\n"
    with _writing(written["matrix"], compress) as write:
        write(f"{header}{n_genes} {n_cells} {csr.nnz}\n".encode())
        _write_entries(write, csr)
    with _writing(written["features"], compress) as write:
        write("".join("\t".join(row) + "\n" for row in feature_rows).encode())
    with _writing(written["barcodes"], compress) as write:
        write("".join(barcode + "\n" for barcode in barcodes).encode())
    return written


#: Entries formatted per block: ~15 MB of text, a few dozen blocks for a full-size sample.
_WRITE_BLOCK_ENTRIES = 1 << 20


def _write_entries(write, csr: sp.csr_matrix) -> None:
    """Write the entries of ``csr`` (cells x genes) as ``gene cell count`` lines, 1-based,
    grouped by cell with genes descending, a block of cells at a time.

    Formatted by hand: ``scipy.io.mmwrite`` takes 3.4 s of CPU for a full-size sample (15 M
    entries) where this loop takes 0.9 s, and writes the entries in the order it is given,
    so Cell Ranger's order would cost two more arrays the size of the matrix to build.
    """
    digits = len(str(max(csr.shape))) * 2 + len(str(int(csr.data.max(initial=0)))) + 3
    buffer = np.empty(0, np.uint8)
    start, n_cells = 0, csr.shape[0]
    while start < n_cells:
        limit = csr.indptr[start] + _WRITE_BLOCK_ENTRIES
        stop = max(start + 1, int(np.searchsorted(csr.indptr, limit, side="right")) - 1)
        stop = min(stop, n_cells)
        bound = int(csr.indptr[stop] - csr.indptr[start]) * digits
        if buffer.size < bound:
            buffer = np.empty(bound, np.uint8)
        write(buffer[: _format_entries(csr.indptr, csr.indices, csr.data, start, stop, buffer)])
        start = stop


@numba.njit(**_JIT)
def _format_entries(indptr, indices, data, start, stop, out):
    """Format the entries of cells ``start:stop`` into ``out``; returns the bytes written."""
    pos = 0
    for cell in range(start, stop):
        for k in range(indptr[cell + 1] - 1, indptr[cell] - 1, -1):
            pos = _format_int(out, pos, indices[k] + 1)
            out[pos] = 32  # space
            pos = _format_int(out, pos + 1, cell + 1)
            out[pos] = 32
            pos = _format_int(out, pos + 1, np.int64(data[k]))
            out[pos] = 10  # newline
            pos += 1
    return pos


@numba.njit(**_JIT)
def _format_int(out, pos, value):
    """Write the decimal digits of ``value`` (>= 0) at ``out[pos:]``; returns the end."""
    n = 1
    while value >= 10**n and n < 19:
        n += 1
    end = pos + n
    for i in range(n):
        out[end - 1 - i] = 48 + value % 10
        value //= 10
    return end


@contextlib.contextmanager
def _writing(path: Path, compress: bool):
    """A function writing bytes to ``path`` (gzipped if ``compress``), replaced atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        if not compress:
            yield out.write
            return
        # ISA-L level 1: several times zlib's speed at a similar size; mtime 0 in the header,
        # so the same data gives the same bytes.
        compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
        yield lambda data: out.write(compressor.compress(data))
        out.write(compressor.flush())
