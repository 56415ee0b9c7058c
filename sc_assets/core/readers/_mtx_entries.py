"""The entries of a Matrix Market file as the contract's CSR, made in place (numba).

:func:`read_csr` has fast_matrix_market parse the entries into three arrays: gene and cell
coordinates (int32) and values (float64), 16 bytes an entry. They become the cells x genes CSR
without another array of their size: Cell Ranger writes the entries grouped by cell with genes
descending, so the CSR is those arrays with each cell's run reversed (R's ``writeMM`` and
scipy's ``mmwrite`` order, genes ascending, needs nothing), and the float32 counts go into the
buffer of the cell coordinates, which indptr replaces. Entries in any other order are sorted in
place first, repeated ones summed.

Imported when a matrix is read, not with :mod:`.mtx`: detecting a layout never loads numba.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
from scipy.io._fast_matrix_market import _fmm_core

_JIT = {"nogil": True, "cache": True}
_DESCENDING, _ASCENDING, _UNSORTED = 0, 1, 2


class NotACount(Exception):
    """An entry whose value is no count (negative, not whole, not a number)."""

    def __init__(self, entry: int, value: float) -> None:
        super().__init__(entry, value)
        self.entry = entry
        """Its position among the entries, from 0."""
        self.value = value


def read_csr(cursor) -> sp.csr_matrix:
    """The entries after fast_matrix_market's ``cursor`` (its header read) as a cells x genes
    canonical CSR: float32 counts, int32 indices (int64 indptr from 2**31 entries on).

    Raises
    ------
    NotACount
        For the first entry whose value is no count.
    ValueError, OverflowError
        fast_matrix_market's, for a line it cannot parse.
    """
    header = cursor.header
    n_genes, n_cells, nnz = header.nrows, header.ncols, header.nnz
    rows = np.empty(nnz, np.int32)
    cols = np.empty(nnz, np.int32)
    values = np.empty(nnz, np.float64)
    _fmm_core.read_body_coo(cursor, rows, cols, values)
    indptr = np.zeros(n_cells + 1, np.int64)
    bad, order = _scan(rows, cols, values, indptr)
    if bad >= 0:
        raise NotACount(int(bad), float(values[bad]))
    if order == _UNSORTED:
        nnz = _sort_entries(rows, cols, values, indptr)
    np.cumsum(indptr, out=indptr)
    # The float32 counts take the place of the cell coordinates, which indptr now holds.
    data = cols.view(np.float32)
    _finish(rows, values, indptr, order == _DESCENDING, data)
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
    return X


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
def _finish(rows, values, indptr, descending, data):
    """Make the CSR in place: reverse each cell's genes if ``descending``, and cast the values
    into ``data`` (float32) in the same order."""
    for c in range(indptr.size - 1):
        start, stop = indptr[c], indptr[c + 1]
        if descending:
            for t in range((stop - start) // 2):
                a, b = start + t, stop - 1 - t
                rows[a], rows[b] = rows[b], rows[a]
            for k in range(start, stop):
                data[k] = values[stop - 1 - (k - start)]
        else:
            for k in range(start, stop):
                data[k] = values[k]
