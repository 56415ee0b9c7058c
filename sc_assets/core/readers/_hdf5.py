"""A compressed sparse matrix from HDF5 datasets, checked as the contract wants it.

Both HDF5 readers use this: Cell Ranger's ``.h5`` (:mod:`.tenx_h5`) and AnnData's ``.h5ad``
(:mod:`.h5ad`). :func:`read_sparse_arrays` reads a group's ``data``, ``indices`` and ``indptr``
straight into the contract's dtypes, on all cores (:mod:`._hdf5_datasets`, which says why it
does not leave that to h5py), and checks the values; the copy for ``layers["counts"]`` is made
as the blocks are read, while each is in cache. :func:`checked_csr` checks each row's columns
are in order (a numba loop, :func:`_in_order`). Nothing of the size of the matrix is allocated
but the matrix and its copy. Errors name the dataset and, where there is one, the entry.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse as sp
from isal import isal_zlib

from sc_assets.core._loops import compiled
from sc_assets.core.errors import CountMatrixError
from sc_assets.core.readers._hdf5_datasets import BLOCK, ValueRange, reader, run

#: Values per job of the order check: a few jobs per core (each needs the GIL to start).
_ROWS_BLOCK = 1 << 21

#: Describes an entry for messages: ``describe(row, column)`` (column None when unknown).
Describe = Callable[[int, "int | None"], str]


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


@dataclass(frozen=True)
class SparseArrays:
    """The arrays of a compressed sparse matrix in the contract's dtypes."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    values: ValueRange
    """The range of ``data`` as stored (before the cast to float32)."""
    copies: tuple[np.ndarray, np.ndarray] | None = None
    """``data`` and ``indices`` again, for ``layers["counts"]``, when asked for."""


def read_sparse_arrays(
    path: str | os.PathLike[str],
    group: h5py.Group,
    shape: tuple[int, int],
    describe: Describe,
    pool: ThreadPoolExecutor | None,
    *,
    check_counts: bool = True,
    copy: bool = False,
    alongside: Callable[[], object] | None = None,
) -> SparseArrays:
    """Read ``group``'s ``data``, ``indices`` and ``indptr`` as a CSR matrix of ``shape`` (for
    a CSC matrix, the transposed shape): float32 data, int32 indices and indptr (int64 from
    2**31 values on).

    Checks ``indptr`` against ``shape`` and the number of values, the indices' range and, if
    ``check_counts``, that the values are non-negative whole numbers (their range is returned
    either way). ``describe(row, column)`` names an entry, e.g. ``"cell AAAC-1, gene CD3E"``.
    With ``copy``, each block is also copied while it is in cache, for ``layers["counts"]``.
    ``alongside()`` is called once the datasets' storage is known, before their values are
    read: HDF5 runs one call at a time, so reads of other parts of the file started then (an
    .h5ad's obs and var, on the pool) no longer hold this one up.

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
    read_indices, read_data = reader(indices_set), reader(data_set)
    if alongside is not None:
        alongside()

    indices = np.empty(nnz, dtype=index_dtype)
    copies = (np.empty(nnz, np.float32), np.empty(nnz, index_dtype)) if copy else (None, None)
    found = read_indices(indices, pool, copies[1])
    if nnz and (found.low < 0 or found.high >= n_cols):
        at, value = first_problem(indices_set, lambda v: (v < 0) | (v >= n_cols))
        where = _entry(at, indptr, describe)
        raise CountMatrixError(path, f"{where}: index {value} is out of range ({n_cols:,} columns)")

    data = np.empty(nnz, dtype=np.float32)
    values = read_data(data, pool, copies[0])
    if check_counts and not values.counts:
        at, value = first_problem(data_set, lambda v: ~is_count(v))
        where = _entry(at, indptr, describe, int(indices[at]))
        raise CountMatrixError(path, f"{where}: {count_problem(value)}")
    return SparseArrays(data, indices, indptr, values, copies if copy else None)


def checked_csr(
    path: str | os.PathLike[str],
    arrays: SparseArrays,
    shape: tuple[int, int],
    describe: Describe,
    pool: ThreadPoolExecutor | None,
    *,
    entries_of: Callable[[int, int], list[int]] | None = None,
) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """The contract's CSR of ``arrays`` (values checked already), with each row's columns
    checked to be in order, by blocks of rows on ``pool``; and the CSR of its copies, if any.

    Columns out of order within a row are sorted (in place). A column twice in a row raises
    :class:`CountMatrixError` naming the row, the column and, through
    ``entries_of(row, column)``, the entries in the file.
    """
    X = _csr(arrays.data, arrays.indices, arrays.indptr, shape)
    blocks = _row_blocks(X.indptr)
    in_order = compiled(_in_order)
    jobs = [
        (X.indptr[start : stop + 1], X.indices[X.indptr[start] : X.indptr[stop]])
        for start, stop in blocks
    ]
    found: list[bool] = []
    run(pool, in_order, jobs, found.append)
    if not all(found):
        X.has_sorted_indices = False
        X.sort_indices()  # in place
        # Sorted, a row's columns are out of order only where one repeats.
        for (start, stop), job in zip(blocks, jobs, strict=True):
            if not in_order(*job):
                raise _repeated(path, X, start, stop, describe, entries_of)
        if arrays.copies is not None:
            for copy, array in zip(arrays.copies, (X.data, X.indices), strict=True):
                np.copyto(copy, array)
    X.has_canonical_format = True  # sorted, no duplicates: checked above
    if arrays.copies is None:
        return X, None
    X_copy = _csr(*arrays.copies, X.indptr.copy(), shape)
    X_copy.has_canonical_format = True
    return X, X_copy


def _in_order(indptr, indices) -> bool:
    """Whether the columns of each row strictly ascend, for the rows ``indptr`` delimits
    (``indices`` holds their columns, from ``indptr[0]`` on). Compiled by numba.

    Without a branch in the loop over the values, so that it is vectorized: the columns not
    above the one before are counted, and must all start a row.
    """
    first = indptr[0]
    descents = 0
    for k in range(1, indices.size):
        descents += indices[k] <= indices[k - 1]
    at_row_starts = 0
    for row in range(1, indptr.size - 1):
        at = indptr[row] - first
        if indptr[row - 1] - first < at < indices.size:  # a row's first value after another's
            at_row_starts += indices[at] <= indices[at - 1]
    return descents == at_row_starts


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
    rows = max(1, BLOCK // max(1, math.prod(dataset.shape[1:])))
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
    """A CSR matrix of these very arrays, set after construction: scipy's constructor may
    copy them, and checks the indices (a pass over them)."""
    matrix = sp.csr_matrix(shape, dtype=data.dtype)
    matrix.data, matrix.indices, matrix.indptr = data, indices, indptr
    return matrix


def _row_blocks(indptr: np.ndarray) -> list[tuple[int, int]]:
    """Blocks of consecutive rows holding about :data:`_ROWS_BLOCK` values each."""
    n_rows = indptr.size - 1
    starts = np.arange(0, int(indptr[-1]), _ROWS_BLOCK)
    bounds = np.unique(np.concatenate([np.searchsorted(indptr, starts, "right") - 1, [0, n_rows]]))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
