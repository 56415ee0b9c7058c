"""Cell Ranger HDF5 count matrices (``filtered_feature_bc_matrix.h5``), all versions.

Cell Ranger >= 3 keeps one ``/matrix`` group (``barcodes``, ``data``, ``indices``,
``indptr``, ``shape`` and a ``features`` group with ``id``, ``name``, ``feature_type``,
``genome``); Cell Ranger 1-2 keep one root group per genome, with ``genes`` (ids) and
``gene_names`` instead of ``features``. Both store a genes x cells CSC matrix, which is the
cells x genes CSR of the contract: its arrays are read straight into the contract's dtypes.

How it is fast and lean
-----------------------
Cell Ranger compresses ``data`` and ``indices`` with shuffle + gzip in chunks of 80,000
values, which h5py inflates one after the other, holding the GIL. Here the chunks are read as
stored and inflated (ISA-L), unshuffled and cast on all cores at once, each chunk's value
range taken while it is in cache (:func:`read_sparse_arrays`). One more pass, also on all
cores, checks each cell's genes are in order, copies the arrays for ``layers["counts"]`` and
takes the QC sums (:func:`checked_csr`). Nothing of the size of the matrix is allocated but
the matrix and its copy. The h5ad reader reads its sparse matrices with the same functions.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse as sp
from isal import isal_zlib

from sc_assets.core.errors import CountMatrixError
from sc_assets.core.qc import MT_PREFIX, CountSums
from sc_assets.core.readers._contract import (
    GENE_EXPRESSION,
    CountData,
    Features,
    canonical_csr,
)
from sc_assets.core.readers._source import HDF5_MAGIC, ReadOptions, Source

__all__ = [
    "LAYOUTS",
    "SparseArrays",
    "ValueRange",
    "checked_csr",
    "count_problem",
    "count_text",
    "damaged",
    "detect",
    "first_problem",
    "flagged_genes",
    "is_count",
    "open_hdf5",
    "read",
    "read_gene_names",
    "read_sparse_arrays",
    "reading_pool",
    "write_10x_h5",
]

LAYOUTS = ("10x_h5",)

_MATRIX = ("barcodes", "data", "indices", "indptr", "shape")
_FEATURES = ("id", "name", "feature_type")
_LEGACY = (*_MATRIX, "genes", "gene_names")
#: Cell Ranger's chunk length (``HDF5_CHUNK_SIZE``) for the matrix datasets.
_CHUNK = 80_000
#: Values per block when a dataset is read through h5py.
_BLOCK = 1 << 20
#: Values per job of the row checks: small, so each thread's temporaries stay small.
_ROWS_BLOCK = 1 << 18

#: Describes an entry for messages: ``describe(row, column)`` (column None when unknown).
Describe = Callable[[int, "int | None"], str]


# --- the layout ------------------------------------------------------------------------------


def detect(path: Path, head: bytes) -> Source | None:
    """A Cell Ranger HDF5 file, >= 3 (``/matrix``) or 1-2 (a group per genome)."""
    if not head.startswith(HDF5_MAGIC) or path.is_dir():
        return None
    try:
        with h5py.File(path, "r") as f:
            if _is_v3(f):
                detail = "a Cell Ranger 3 HDF5 file"
            elif genomes := _legacy_genomes(f):
                detail = f"a Cell Ranger 1-2 HDF5 file (genomes: {', '.join(genomes)})"
            else:
                return None
    except (OSError, KeyError, ValueError):  # unreadable: describe_input says so
        return None
    return Source("10x_h5", path, {"matrix": path}, detail)


def read(source: Source, options: ReadOptions) -> CountData:
    """The counts, barcodes and features of a Cell Ranger HDF5 file (see the module doc)."""
    path = source.files["matrix"]
    with open_hdf5(path) as f:
        group, features = _features(f, path, options)
        shape = group["shape"][()]
        if shape.shape != (2,) or shape.min() < 0:
            raise CountMatrixError(path, f"{group.name}/shape is {shape.tolist()}, not 2 sizes")
        n_features, n_cells = (int(n) for n in shape)
        barcodes = _strings(group["barcodes"])
        for what, found, expected in (
            ("barcodes", len(barcodes), n_cells),
            ("features", len(features.names), n_features),
        ):
            if found != expected:
                problem = f"{found:,} {what}, but {group.name}/shape says {expected:,}"
                raise CountMatrixError(path, problem)

        def describe(cell: int, feature: int | None) -> str:
            gene = "" if feature is None else f", feature {features.names[feature]}"
            return f"cell {barcodes[cell]}{gene}"

        keep = _genome_columns(path, features, options.genome)
        # QC sums now only if counts_adata keeps every column (else it takes them itself).
        all_genes = keep is None and all(t == GENE_EXPRESSION for t in features.types or ())
        flagged = flagged_genes(features.names) if all_genes else None
        with reading_pool() as pool:
            arrays = read_sparse_arrays(path, group, (n_cells, n_features), describe, pool)
            X, X_copy, sums = checked_csr(
                path,
                arrays,
                (n_cells, n_features),
                describe,
                pool,
                flagged=flagged,
                entries_of=lambda cell, gene: _entries(group, arrays.indptr, cell, gene),
            )
    notes: dict[str, Any] = {}
    if keep is not None:  # Cell Ranger >= 3 with several genomes: the one asked for
        X, X_copy = canonical_csr(X[:, keep]), None
        features = _subset(features, keep)
        notes["genome"] = options.genome
    return CountData(
        path=path,
        layout=source.layout,
        barcodes=barcodes,
        features=features,
        X=X,
        X_copy=X_copy,
        sums=sums,
        notes=notes,
    )


def read_gene_names(source: Source, options: ReadOptions) -> list[str]:
    """The Gene Expression feature names, in matrix order, without reading the matrix."""
    path = source.files["matrix"]
    with open_hdf5(path) as f:
        _, features = _features(f, path, options)
    keep = _genome_columns(path, features, options.genome)
    if keep is not None:
        features = _subset(features, keep)
    if features.types is None:
        return list(features.names)
    return [n for n, t in zip(features.names, features.types, strict=True) if t == GENE_EXPRESSION]


def _is_v3(f: h5py.File) -> bool:
    matrix = f.get("matrix")
    if not isinstance(matrix, h5py.Group) or not all(k in matrix for k in _MATRIX):
        return False
    features = matrix.get("features")
    return isinstance(features, h5py.Group) and all(k in features for k in _FEATURES)


def _legacy_genomes(f: h5py.File) -> list[str]:
    return [
        name
        for name, item in f.items()
        if isinstance(item, h5py.Group)
        and all(isinstance(item.get(k), h5py.Dataset) for k in _LEGACY)
    ]


@contextlib.contextmanager
def open_hdf5(path: Path) -> Iterator[h5py.File]:
    """``path`` open for reading; a damaged file's errors become CountMatrixError."""
    try:
        with h5py.File(path, "r") as f:
            yield f
    except (OSError, KeyError, isal_zlib.error) as error:
        raise damaged(path, error) from None


def damaged(path: str | os.PathLike[str], error: Exception) -> CountMatrixError:
    """The error for an HDF5 file that h5py (or inflating a chunk) fails on."""
    problem = f"cannot be read: truncated or damaged? ({type(error).__name__}: {error})"
    return CountMatrixError(path, problem)


def _features(f: h5py.File, path: Path, options: ReadOptions) -> tuple[h5py.Group, Features]:
    """The matrix group and its features; for Cell Ranger 1-2, of the genome ``options`` picks."""
    if _is_v3(f):
        group = f["matrix"]
        table = group["features"]
        # A probe barcode matrix (Cell Ranger 7 Flex) names probes in id, genes in gene_id.
        ids = table["gene_id"] if "gene_id" in table else table["id"]
        genomes = _strings(table["genome"], repeated=True) if "genome" in table else None
        return group, Features(
            names=_strings(table["name"]),
            ids=_strings(ids),
            types=_strings(table["feature_type"], repeated=True),
            genomes=genomes,
        )
    genomes = _legacy_genomes(f)
    if options.genome is None and len(genomes) > 1:
        problem = (
            f"holds {len(genomes)} genomes ({', '.join(genomes)}): add a genome column to the "
            "samplesheet naming the one to read"
        )
        raise CountMatrixError(path, problem)
    genome = options.genome or genomes[0]
    if genome not in genomes:
        problem = f"has no genome {genome!r}: its genomes are {', '.join(genomes)}"
        raise CountMatrixError(path, problem)
    group = f[genome]
    return group, Features(names=_strings(group["gene_names"]), ids=_strings(group["genes"]))


def _genome_columns(path: Path, features: Features, genome: str | None) -> np.ndarray | None:
    """The columns of ``genome`` in a Cell Ranger >= 3 file, or None to keep them all."""
    if genome is None or features.genomes is None:
        return None
    found = list(dict.fromkeys(features.genomes))
    if genome not in found:
        problem = f"has no genome {genome!r}: its genomes are {', '.join(found)}"
        raise CountMatrixError(path, problem)
    if len(found) == 1:
        return None
    return np.flatnonzero(np.asarray(features.genomes, dtype=object) == genome)


def _subset(features: Features, columns: np.ndarray) -> Features:
    def pick(values: list[str] | None) -> list[str] | None:
        return None if values is None else [values[i] for i in columns]

    return Features(
        pick(features.names), pick(features.ids), pick(features.types), pick(features.genomes)
    )


def _strings(dataset: h5py.Dataset, *, repeated: bool = False) -> list[str]:
    """A dataset of byte strings as ``str``; ``repeated`` values share one object each."""
    raw = dataset[()]
    if raw.dtype.kind not in "SO":
        return [str(v) for v in raw.tolist()]
    if repeated:  # feature types and genomes: a handful of values, 33,538 times
        unique, inverse = np.unique(raw, return_inverse=True)
        decoded = [_decoded(v) for v in unique.tolist()]
        return [decoded[i] for i in inverse.tolist()]
    return [_decoded(v) for v in raw.tolist()]


def _decoded(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def flagged_genes(names: Sequence[str]) -> np.ndarray:
    """Which features are mitochondrial, as counts_adata flags them (``var["mt"]``)."""
    return np.array([name.startswith(MT_PREFIX) for name in names], dtype=bool)


def _entries(group: h5py.Group, indptr: np.ndarray, cell: int, gene: int) -> list[int]:
    """The positions in the file of ``gene``'s counts in ``cell`` (for an error message)."""
    start, stop = int(indptr[cell]), int(indptr[cell + 1])
    return (start + np.flatnonzero(group["indices"][start:stop] == gene)).tolist()


# --- writing (tests, demo data, benchmarks) ----------------------------------------------------


def write_10x_h5(
    path: str | os.PathLike[str],
    X: Any,
    barcodes: Sequence[str],
    gene_ids: Sequence[str],
    gene_names: Sequence[str],
    *,
    feature_types: Sequence[str] | None = None,
    genome: str | Sequence[str] = "GRCh38",
    version: int = 3,
) -> None:
    """Write a cells x genes count matrix as Cell Ranger writes its HDF5 file.

    Parameters
    ----------
    path
        The ``.h5`` file to write (replaced if it exists).
    X
        Cells x features counts: any scipy sparse matrix or dense array of whole numbers.
    barcodes, gene_ids, gene_names
        Cell barcodes; feature ids (``ENSG...``) and names (symbols), in column order.
    feature_types
        ``Gene Expression``, ``Antibody Capture``... per feature (version 3 only); default all
        Gene Expression.
    genome
        The genome's name; for version 3 also one per feature (a mixed-species run).
    version
        3: Cell Ranger >= 3 (``/matrix`` with a ``features`` group); 2: Cell Ranger 1-2 (one
        group named after the genome, with ``genes`` and ``gene_names``).
    """
    if version not in (2, 3):
        raise ValueError(f"version must be 2 or 3, got {version}")
    n_cells, n_features = X.shape
    csc = sp.csc_matrix(X.T)  # genes x cells CSC: cells x genes CSR, as Cell Ranger stores it
    csc.sum_duplicates()
    csc.eliminate_zeros()
    if len(barcodes) != n_cells or len(gene_ids) != n_features or len(gene_names) != n_features:
        raise ValueError("barcodes, gene_ids and gene_names must match X's shape")
    if version == 2 and not isinstance(genome, str):
        raise ValueError("a Cell Ranger 1-2 file has one genome: give it as a string")
    # As Cell Ranger: chunks of 80,000 values, shuffle + gzip (level 4), extendable.
    chunked = {"chunks": (_CHUNK,), "maxshape": (None,), "compression": "gzip", "shuffle": True}
    with h5py.File(path, "w") as f:
        f.attrs["filetype"] = "matrix"
        f.attrs["chemistry_description"] = "Single Cell 3' v3"
        f.attrs["library_ids"] = np.array([b"sc_assets"])
        f.attrs["original_gem_groups"] = np.array([1])
        if version == 3:
            f.attrs["version"] = 2  # the matrix format version Cell Ranger >= 3 writes
        group = f.create_group("matrix" if version == 3 else genome)
        group.create_dataset("barcodes", data=_bytes(barcodes), compression="gzip")
        group.create_dataset("data", data=csc.data.astype(np.int32), **chunked)
        group.create_dataset("indices", data=csc.indices.astype(np.int64), **chunked)
        group.create_dataset("indptr", data=csc.indptr.astype(np.int64), **chunked)
        group.create_dataset("shape", data=np.array([n_features, n_cells], np.int32), **chunked)
        if version == 2:
            group.create_dataset("genes", data=_bytes(gene_ids), compression="gzip")
            group.create_dataset("gene_names", data=_bytes(gene_names), compression="gzip")
            return
        genomes = [genome] * n_features if isinstance(genome, str) else list(genome)
        types = [GENE_EXPRESSION] * n_features if feature_types is None else list(feature_types)
        table = group.create_group("features")
        table.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        for key, values in (
            ("feature_type", types),
            ("genome", genomes),
            ("id", gene_ids),
            ("name", gene_names),
        ):
            if len(values) != n_features:
                raise ValueError(f"{key}: {len(values)} values for {n_features} features")
            table.create_dataset(key, data=_bytes(values), compression="gzip")


def _bytes(values: Sequence[str]) -> np.ndarray:
    encoded = [v.encode("utf-8") for v in values]
    return np.array(encoded, dtype=f"S{max([1, *(len(e) for e in encoded)])}")


# --- a sparse matrix from HDF5 datasets (the h5ad reader uses these too) ----------------------


@dataclass(frozen=True)
class ValueRange:
    """The smallest and largest of some stored values, and whether all are whole numbers."""

    low: float
    high: float
    whole: bool
    """False also when a value is NaN or infinite."""

    @staticmethod
    def of(values: np.ndarray) -> ValueRange:
        if values.size == 0:
            return ValueRange(0, 0, True)
        low, high = values.min(), values.max()
        whole = True
        if values.dtype.kind == "f":  # min and max are NaN if a value is; inf shows in them
            whole = bool(np.isfinite(low) and np.isfinite(high))
            whole = whole and bool(np.array_equal(values, np.rint(values)))
        return ValueRange(low.item(), high.item(), whole)

    def __or__(self, other: ValueRange) -> ValueRange:
        if math.isnan(self.low) or math.isnan(other.low):
            return ValueRange(math.nan, math.nan, False)
        return ValueRange(
            min(self.low, other.low), max(self.high, other.high), self.whole and other.whole
        )

    @property
    def counts(self) -> bool:
        """Whether the values can be counts: whole numbers, none negative."""
        return self.whole and self.low >= 0


@dataclass(frozen=True)
class SparseArrays:
    """The arrays of a compressed sparse matrix in the contract's dtypes."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    values: ValueRange
    """The range of ``data`` as stored (before the cast to float32)."""


@contextlib.contextmanager
def reading_pool() -> Iterator[ThreadPoolExecutor | None]:
    """Threads for the functions below: one per core (at most 4), None on one core."""
    if _workers() == 1:
        yield None
        return
    with ThreadPoolExecutor(_workers(), thread_name_prefix="sc-assets-read") as pool:
        yield pool


def _workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, cores or 1)


def read_sparse_arrays(
    path: str | os.PathLike[str],
    group: h5py.Group,
    shape: tuple[int, int],
    describe: Describe,
    pool: ThreadPoolExecutor | None,
    *,
    check_counts: bool = True,
) -> SparseArrays:
    """Read ``group``'s ``data``, ``indices`` and ``indptr`` as a CSR matrix of ``shape`` (for
    a CSC matrix, the transposed shape): float32 data, int32 indices and indptr (int64 from
    2**31 values on).

    Checks ``indptr`` against ``shape`` and the number of values, the indices' range and, if
    ``check_counts``, that the values are non-negative whole numbers (their range is returned
    either way). ``describe(row, column)`` names an entry, e.g. ``"cell AAAC-1, gene CD3E"``.

    Raises
    ------
    CountMatrixError
        Naming ``path``, the dataset and, where there is one, the entry.
    """
    n_rows, n_cols = shape
    data_set, indices_set = group["data"], group["indices"]
    name = group.name.rstrip("/")
    nnz = data_set.shape[0] if data_set.ndim == 1 else -1
    if nnz < 0 or indices_set.shape != (nnz,):
        problem = (
            f"{name}/data holds {data_set.shape} values but {name}/indices {indices_set.shape}"
        )
        raise CountMatrixError(path, problem)
    index_dtype = np.int32 if nnz < 2**31 and n_cols < 2**31 else np.int64
    indptr = _checked_indptr(path, name, group["indptr"][()], n_rows, nnz).astype(index_dtype)

    indices = np.empty(nnz, dtype=index_dtype)
    found = _fill(indices_set, indices, pool)
    if nnz and (found.low < 0 or found.high >= n_cols):
        at, value = first_problem(indices_set, lambda v: (v < 0) | (v >= n_cols))
        where = _entry(at, indptr, describe)
        raise CountMatrixError(path, f"{where}: index {value} is out of range ({n_cols:,} columns)")

    data = np.empty(nnz, dtype=np.float32)
    values = _fill(data_set, data, pool)
    if check_counts and not values.counts:
        at, value = first_problem(data_set, lambda v: ~is_count(v))
        where = _entry(at, indptr, describe, int(indices[at]))
        raise CountMatrixError(path, f"{where}: {count_problem(value)}")
    return SparseArrays(data, indices, indptr, values)


def checked_csr(
    path: str | os.PathLike[str],
    arrays: SparseArrays,
    shape: tuple[int, int],
    describe: Describe,
    pool: ThreadPoolExecutor | None,
    *,
    flagged: np.ndarray | None = None,
    entries_of: Callable[[int, int], list[int]] | None = None,
) -> tuple[sp.csr_matrix, sp.csr_matrix, CountSums | None]:
    """The contract's CSR of ``arrays`` (values checked already), an independent copy and, if
    ``flagged`` (the mitochondrial columns) is given, the QC sums (one pass, on all cores).

    Columns out of order within a row are sorted (in place). A column twice in a row raises
    :class:`CountMatrixError` naming the row, the column and, through
    ``entries_of(row, column)``, the entries in the file.
    """
    n_rows, n_cols = shape
    X = _csr(arrays.data, arrays.indices, arrays.indptr, shape)
    # The copy, of whole arrays (faster than block by block), while the pool scans.
    copies = [_submit(pool, np.copy, array) for array in (X.data, X.indices)]
    scan = _Scan(n_rows, n_cols, flagged)
    blocks = _row_blocks(X.indptr)
    _run(pool, scan.rows, [(start, stop, X) for start, stop in blocks], scan.fold)
    data, indices = (copy.result() for copy in copies)
    if scan.unsorted:
        X.has_sorted_indices = False
        X.sort_indices()  # in place
        again = _Scan(n_rows, n_cols, None)
        for start, stop in blocks:
            if again.rows(start, stop, X)[0]:
                raise _repeated(path, X, start, stop, describe, entries_of)
        data, indices = X.data.copy(), X.indices.copy()
    X_copy = _csr(data, indices, X.indptr.copy(), shape)
    for matrix in (X, X_copy):
        matrix.has_canonical_format = True  # sorted, no duplicates: checked above
    return X, X_copy, scan.sums(X.indptr)


def count_problem(value: float) -> str:
    """What is wrong with a stored value that is no count, e.g. ``"count -3 is negative"``."""
    if not math.isfinite(value):
        return f"count {value} is not a number of counts"
    if value != round(value):
        return f"count {count_text(value)} is not a whole number"
    return f"count {count_text(value)} is negative"


def first_problem(
    dataset: h5py.Dataset, bad: Callable[[np.ndarray], np.ndarray]
) -> tuple[int, Any]:
    """The flat position and value of the first stored value for which ``bad`` holds."""
    rows = max(1, _BLOCK // max(1, math.prod(dataset.shape[1:])))
    for start in range(0, dataset.shape[0], rows):
        block = dataset[start : start + rows]
        hits = np.flatnonzero(bad(block))
        if hits.size:
            return start * (block.size // len(block)) + int(hits[0]), block.flat[hits[0]].item()
    raise AssertionError(f"no such value in {dataset.name}")  # the value range said there was


def count_text(value: float) -> str:
    """A stored value as messages show it: ``3``, ``0.4271`` (float32's shortest digits)."""
    if not math.isfinite(value):
        return str(value)
    if value == round(value):
        return str(int(value))
    return np.format_float_positional(np.float32(value) if abs(value) < 1e6 else value)


def is_count(values: np.ndarray) -> np.ndarray:
    """Which of ``values`` are counts: non-negative whole numbers."""
    ok = values >= 0
    if values.dtype.kind == "f":
        ok &= np.isfinite(values) & (values == np.rint(values))
    return ok


def _checked_indptr(path, name: str, indptr: np.ndarray, n_rows: int, nnz: int) -> np.ndarray:
    if indptr.shape != (n_rows + 1,):
        problem = f"{name}/indptr holds {indptr.size:,} offsets, expected {n_rows + 1:,} (shape)"
        raise CountMatrixError(path, problem)
    if indptr.dtype.kind not in "iu":
        raise CountMatrixError(path, f"{name}/indptr holds {indptr.dtype} values, not integers")
    if indptr[0] != 0:
        raise CountMatrixError(path, f"{name}/indptr starts at {indptr[0]:,}, not 0")
    steps = np.diff(indptr)
    if (steps < 0).any():
        i = int(np.argmax(steps < 0))
        problem = (
            f"{name}/indptr decreases at offset {i + 2:,}: {indptr[i + 1]:,} after {indptr[i]:,}"
        )
        raise CountMatrixError(path, problem)
    if indptr[-1] != nnz:
        problem = f"{name}/indptr ends at {indptr[-1]:,} but {name}/data holds {nnz:,} values"
        raise CountMatrixError(path, problem)
    return indptr


def _entry(at: int, indptr: np.ndarray, describe: Describe, column: int | None = None) -> str:
    row = int(np.searchsorted(indptr, at, side="right")) - 1
    return f"entry {at + 1:,} ({describe(row, column)})"


def _repeated(path, X, start, stop, describe, entries_of) -> CountMatrixError:
    """The error for the first column twice in a row among rows ``start:stop`` (sorted)."""
    for row in range(start, stop):
        genes = X.indices[X.indptr[row] : X.indptr[row + 1]]
        twice = np.flatnonzero(genes[1:] == genes[:-1])
        if twice.size:
            gene = int(genes[twice[0]])
            where = describe(row, gene)
            if entries_of is not None:
                listed = " and ".join(f"{e + 1:,}" for e in entries_of(row, gene))
                where = f"entries {listed} ({where})"
            return CountMatrixError(path, f"{where}: the same feature twice in one cell")
    raise AssertionError("no repeated column found")


def _csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape) -> sp.csr_matrix:
    """A CSR matrix of these very arrays."""
    return _sparse(sp.csr_matrix, data, indices, indptr, shape)


def _sparse(kind: type, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape) -> Any:
    """A ``kind`` (CSR or CSC) matrix of these very arrays, even slices of bigger ones.

    Set after construction: scipy's constructor copies an array that is a small part of a
    bigger one (``_prune_array``), which would copy each block of rows the checks look at.
    """
    matrix = kind(shape, dtype=data.dtype)
    matrix.data, matrix.indices, matrix.indptr = data, indices, indptr
    return matrix


# --- the parallel parts -----------------------------------------------------------------------


def _run(
    pool: ThreadPoolExecutor | None,
    job: Callable[..., Any],
    jobs: Iterable[tuple],
    fold: Callable[[Any], None],
) -> None:
    """``fold(job(*args))`` for each ``args`` in order, a few jobs at a time on ``pool``.

    ``jobs`` is taken lazily, so what it reads (compressed chunks) waits in memory only while
    a job is in flight.
    """
    if pool is None:
        for args in jobs:
            fold(job(*args))
        return
    in_flight: deque[Future] = deque()
    limit = 2 * _workers()
    try:
        for args in jobs:
            if len(in_flight) >= limit:
                fold(in_flight.popleft().result())
            in_flight.append(pool.submit(job, *args))
        while in_flight:
            fold(in_flight.popleft().result())
    finally:
        for future in in_flight:  # after an error: let no job write into freed buffers
            future.cancel() or future.exception()


def _submit(pool: ThreadPoolExecutor | None, job: Callable[..., Any], *args: Any) -> Future:
    """``job(*args)`` on ``pool``, or now when there is none."""
    if pool is not None:
        return pool.submit(job, *args)
    done: Future = Future()
    done.set_result(job(*args))
    return done


def _fill(dataset: h5py.Dataset, out: np.ndarray, pool: ThreadPoolExecutor | None) -> ValueRange:
    """Read a 1-D ``dataset`` into ``out`` (cast to its dtype); the range of the stored values.

    Chunks filtered with gzip (and shuffle), as Cell Ranger writes them, are inflated here on
    all cores. Unfiltered values (anndata's default) are read from the file straight into
    ``out`` by blocks, on all cores. Anything else goes through h5py by blocks, each block's
    range taken on the pool while h5py reads the next.
    """
    if out.size == 0:
        return ValueRange(0, 0, True)
    parts: list[ValueRange] = []  # one per chunk or block: a few thousand at most
    if (filters := _inflatable(dataset)) is not None:
        chunk = dataset.chunks[0]

        def chunks() -> Iterator[tuple]:
            for start in range(0, out.size, chunk):
                mask, raw = dataset.id.read_direct_chunk((start,))  # as stored: not inflated
                stop = min(out.size, start + chunk)
                yield raw, mask, filters, dataset.dtype, chunk, out[start:stop]

        _run(pool, _inflate, chunks(), parts.append)
    elif (runs := _stored_runs(dataset)) is not None:
        with open(dataset.file.filename, "rb", buffering=0) as file:
            blocks = (
                (
                    file.fileno(),
                    offset + (start - first) * dataset.dtype.itemsize,
                    dataset.dtype,
                    out[start:stop],
                )
                for first, last, offset in runs
                for start in range(first, last, _BLOCK)
                for stop in [min(last, start + _BLOCK)]
            )
            _run(pool, _pread, blocks, parts.append)
    else:

        def blocks() -> Iterator[tuple]:
            for start in range(0, out.size, _BLOCK):
                stop = min(out.size, start + _BLOCK)
                same = dataset.dtype == out.dtype
                target = out[start:stop] if same else np.empty(stop - start, dataset.dtype)
                dataset.read_direct(target, np.s_[start:stop])
                yield target, out[start:stop]

        _run(pool, _cast, blocks(), parts.append)
    return functools.reduce(operator.or_, parts)


def _stored_runs(dataset: h5py.Dataset) -> list[tuple[int, int, int]] | None:
    """Where an unfiltered 1-D dataset's values lie in its file: ``(first, stop, byte offset)``
    for each run of adjacent values; None if it is filtered, or anything is unusual."""
    if dataset.ndim != 1 or dataset.dtype.kind not in "iuf" or dataset.file.userblock_size:
        return None
    n, size = dataset.shape[0], dataset.dtype.itemsize
    if dataset.chunks is None:
        offset = dataset.id.get_offset()  # None until written
        return None if offset is None else [(0, n, offset)]
    if dataset.id.get_create_plist().get_nfilters():
        return None
    chunk = dataset.chunks[0]
    stored: list[tuple[int, int, int]] = []
    dataset.id.chunk_iter(lambda c: stored.append((c.chunk_offset[0], c.byte_offset, c.size)))
    if len(stored) != -(-n // chunk) or any(length != chunk * size for _, _, length in stored):
        return None  # unwritten chunks (the fill value): leave them to HDF5
    runs: list[list[int]] = []
    for first, offset, _ in sorted(stored):
        if runs and runs[-1][1] == first and runs[-1][2] + (first - runs[-1][0]) * size == offset:
            runs[-1][1] = first + chunk
        else:
            runs.append([first, first + chunk, offset])
    return [(first, min(stop, n), offset) for first, stop, offset in runs]


def _pread(fd: int, offset: int, dtype: np.dtype, out: np.ndarray) -> ValueRange:
    """Values of ``dtype`` at ``offset`` in the file into ``out``; their range."""
    target = out if out.dtype == dtype else np.empty(out.size, dtype)
    view = memoryview(target).cast("B")
    done = 0
    while done < view.nbytes:  # pread may return less than asked
        read = os.preadv(fd, [view[done:]], offset + done)
        if read == 0:
            raise OSError(f"the file ends {view.nbytes - done} bytes early: truncated")
        done += read
    return _cast(target, out)


def _cast(values: np.ndarray, out: np.ndarray) -> ValueRange:
    found = ValueRange.of(values)
    if values is not out:
        out[...] = values
    return found


_SHUFFLE, _DEFLATE = h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE


def _inflatable(dataset: h5py.Dataset) -> tuple[int, ...] | None:
    """The filters of a chunked 1-D dataset if gzip, maybe after shuffle, every chunk stored.

    Uncompressed chunks are left to h5py: it copies them into place in one pass, and a job
    per chunk would cost more than the copy (anndata writes chunks of 60 kB).
    """
    if dataset.ndim != 1 or dataset.chunks is None or dataset.dtype.kind not in "iuf":
        return None
    plist = dataset.id.get_create_plist()
    codes = tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))
    if codes not in ((_DEFLATE,), (_SHUFFLE, _DEFLATE)):
        return None
    if dataset.id.get_num_chunks() != -(-dataset.shape[0] // dataset.chunks[0]):
        return None  # unwritten chunks (the fill value): leave them to HDF5
    return codes


def _inflate(
    raw: bytes, mask: int, filters: tuple[int, ...], dtype: np.dtype, chunk: int, out: np.ndarray
) -> ValueRange:
    """Undo ``filters`` on one stored chunk (those ``mask`` says were applied), into ``out``."""
    applied = [code for i, code in enumerate(filters) if not mask & (1 << i)]
    buffer = isal_zlib.decompress(raw) if _DEFLATE in applied else raw
    if len(buffer) != chunk * dtype.itemsize:
        raise OSError(f"a chunk holds {len(buffer)} bytes, expected {chunk * dtype.itemsize}")
    if _SHUFFLE in applied and dtype.itemsize > 1:
        values = _unshuffled(buffer, dtype, chunk)
    else:
        values = np.frombuffer(buffer, dtype)
    return _cast(values[: out.size], out)


def _unshuffled(buffer: bytes, dtype: np.dtype, chunk: int) -> np.ndarray:
    """The values of a shuffled chunk (byte k of every value stored together, for each k).

    Cell Ranger's int32 counts, and int64 indices below 2**32, are rebuilt from their four low
    byte planes with whole-array shifts: five times faster than numpy's transposed copy.
    """
    size = dtype.itemsize
    planes = np.frombuffer(buffer, np.uint8).reshape(size, chunk)
    if (
        dtype.kind not in "iu"
        or size not in (4, 8)
        or dtype.byteorder == ">"
        or (size == 8 and _any(planes[4:]))
    ):
        unshuffled = np.empty((chunk, size), np.uint8)
        unshuffled[...] = planes.T
        return unshuffled.view(dtype).reshape(chunk)
    values = planes[0].astype(np.uint32)
    shifted = np.empty(chunk, np.uint32)
    for k in (1, 2, 3):
        np.left_shift(planes[k], 8 * k, out=shifted, dtype=np.uint32)
        values |= shifted
    return values.view(np.int32) if dtype.kind == "i" and size == 4 else values


def _any(planes: np.ndarray) -> bool:
    flat = planes.reshape(-1)
    return bool((flat.view(np.uint64) if flat.size % 8 == 0 else flat).any())


def _row_blocks(indptr: np.ndarray) -> list[tuple[int, int]]:
    """Blocks of consecutive rows holding about :data:`_ROWS_BLOCK` values each."""
    n_rows = indptr.size - 1
    starts = np.arange(0, int(indptr[-1]), _ROWS_BLOCK)
    bounds = np.unique(np.concatenate([np.searchsorted(indptr, starts, "right") - 1, [0, n_rows]]))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


class _Scan:
    """The order check and the QC sums of a CSR matrix, by blocks of rows.

    The sums are taken in float32 with reduceat and sparse products (scipy's loops, without
    the casts to intp and float64 of bincount): exact for whole numbers as long as every sum
    stays below 2**24, which each block checks, else it sums in float64.
    """

    def __init__(self, n_rows: int, n_cols: int, flagged: np.ndarray | None) -> None:
        self.n_cols, self.flagged = n_cols, flagged
        self.unsorted = False
        if flagged is not None:
            self.flagged_values = flagged.astype(np.float32)
            self.ones = np.ones(0, np.float32)
            self.cell_total, self.cell_flagged = np.zeros(n_rows), np.zeros(n_rows)
            self.gene_nnz, self.gene_total = np.zeros(n_cols, np.int64), np.zeros(n_cols)

    def rows(self, start: int, stop: int, X: sp.csr_matrix) -> tuple:
        """Rows ``start:stop``: whether out of order, and the per-gene sums to fold."""
        indptr = X.indptr[start : stop + 1]
        first, last = int(indptr[0]), int(indptr[-1])
        genes, values = X.indices[first:last], X.data[first:last]
        # A gene not above the one before it, but at the start of a row: unsorted, or twice.
        descents = genes[1:] <= genes[:-1]
        row_starts = indptr[1:-1] - first - 1
        descents[row_starts[(row_starts >= 0) & (row_starts < descents.size)]] = False
        unsorted = bool(descents.any())
        if self.flagged is None:
            return unsorted, None, None
        n_rows = stop - start
        local = indptr - first
        filled = local[1:] > local[:-1]
        totals = np.zeros(n_rows, np.float32)
        if values.size:
            totals[filled] = np.add.reduceat(values, local[:-1][filled])
        # Counts are non-negative: no partial sum exceeds the block's total.
        dtype = np.float32 if float(totals.sum(dtype=np.float64)) < 2**24 else np.float64
        if dtype is np.float64:
            values = values.astype(np.float64)
            totals = np.zeros(n_rows)
            totals[filled] = np.add.reduceat(values, local[:-1][filled])
        self.cell_total[start:stop] = totals  # rows are disjoint: each job writes its own
        if self.flagged.any():
            by_row = _sparse(sp.csr_matrix, values, genes, local, (n_rows, self.n_cols))
            self.cell_flagged[start:stop] = by_row @ self.flagged_values.astype(dtype)
        # The block's transpose, read by column: per-gene sums without bincount's casts.
        by_gene = _sparse(sp.csc_matrix, values, genes, local, (self.n_cols, n_rows))
        pattern = _sparse(sp.csc_matrix, self._ones(values.size), genes, local, by_gene.shape)
        ones = np.ones(n_rows, dtype)
        return unsorted, pattern @ ones, by_gene @ ones

    def _ones(self, size: int) -> np.ndarray:
        """``size`` float32 ones, from one array shared by the jobs (read only)."""
        if self.ones.size < size:
            self.ones = np.ones(max(size, _ROWS_BLOCK), np.float32)  # a race makes two: fine
        return self.ones[:size]

    def fold(self, part: tuple) -> None:
        unsorted, gene_nnz, gene_total = part
        self.unsorted |= unsorted
        if gene_nnz is not None:
            self.gene_nnz += gene_nnz.astype(np.int64)  # whole numbers below 2**24: exact
            self.gene_total += gene_total

    def sums(self, indptr: np.ndarray) -> CountSums | None:
        if self.flagged is None:
            return None
        return CountSums(
            cell_nnz=np.diff(indptr).astype(np.int64),
            cell_total=np.rint(self.cell_total).astype(np.int64),
            cell_flagged_total=np.rint(self.cell_flagged).astype(np.int64),
            gene_nnz=self.gene_nnz,
            gene_total=np.rint(self.gene_total).astype(np.int64),
            gene_flagged=self.flagged.copy(),
        )
