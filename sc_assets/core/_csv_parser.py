"""Parse a count matrix as text straight into a cells x genes CSR matrix.

The file (GEO series such as GSE174609) has a header row (a corner field, then one barcode per
cell) and one row per gene: the gene name, then one non-negative integer count per cell. About
95% of the counts are ``0``. The same parser reads its kin: tab-separated (TSV) as well as
comma-separated, plain text as well as gzip, and ``cells_x_genes`` files (a header of gene
symbols, then a row per barcode).

How it is fast and lean
-----------------------
* :class:`~sc_assets.core._decompress.decompressed_blocks` inflates the file (or just reads
  it, if it is plain text) in a background thread, into recycled buffers, while
  :func:`_parse_rows` (numba, ``nogil``) parses the previous block in this thread: decoding
  and parsing run on the two cores at once.
* Runs of ``0,`` are skipped eight bytes at a time by comparing an unaligned 64-bit load with
  ``"0,0,0,0,"`` (``"0\\t0\\t0\\t0\\t"`` for TSV: the separator is a runtime argument of
  the one compiled loop); the first other pair is found with a count-trailing-zeros.
* Each file row is one gene, i.e. one column of the cells x genes matrix. The transpose to CSR
  is a two-pass bucket sort whose first pass is the parse itself: each non-zero is appended to
  the bucket of its cell (128 cells per bucket; a bucket is a chain of chunks from one pool,
  reserved from the gzip size field), and non-zeros are counted per cell on the way. At the
  end each bucket's rows are written in one pass, on both cores (:func:`_place_buckets`). Both
  passes keep their write cursors in L1, unlike a direct scatter to thousands of rows. No
  dense matrix and no COO triplets ever exist. In a cells_x_genes file each row is already a
  CSR row: the same loop appends it in order, and there is nothing to transpose.
* The per-cell and per-gene sums that QC metrics are made of (:class:`CountSums`) are taken in
  the same loop, while each count is in a register.
* Validation happens in the same loop: the fast path accepts only ``digits`` followed by a
  separator; anything else goes to :func:`_slow_value`, which either parses it (``3.0``,
  ``"3"``, `` 3``, ``3e0``...) or returns an error code and the byte position, which
  :class:`_RowParser` turns into a :class:`~sc_assets.core.errors.CountMatrixError`.

Accepted
--------
Comma or tab separators (detected from the header line, or given), gzip (single or
multi-member) or plain text, CRLF or LF line endings, a UTF-8 byte-order mark, double-quoted
fields (RFC 4180, ``""`` for a quote; but a quoted field may not contain a line break), no
final newline, blank lines (skipped, as pandas does). A count is an optionally signed decimal
with an optional fraction and exponent, and spaces (or, in a CSV, tabs) around it, whose value
is a whole number from 0 to 2147483647 (``3``, ``003``, ``+3``, ``3.``, ``3.000``, ``3e0``,
``1.5e1``, ``-0``); counts above 2**24 are rounded to float32 as ``astype(np.float32)`` would.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from sc_assets.core._csv_text import (
    GENES_X_CELLS,
    TextLayout,
    header_layout,
    parse_header,
    quote_text,
)
from sc_assets.core._decompress import decompressed_blocks, uncompressed_size_hint
from sc_assets.core.errors import CountMatrixError
from sc_assets.core.qc import CountSums

if sys.byteorder != "little":  # the zero-run skip reads the first byte from the low bits
    raise ImportError("sc_assets.core._csv_parser needs a little-endian machine")


@dataclass(frozen=True)
class ParsedCountMatrix:
    """The content of one count-matrix file.

    Attributes
    ----------
    barcodes
        Cell barcodes: the header fields after the corner field, in file order.
    genes
        Gene names: the first field of each data row, in file order, exactly as written
        (unquoted); duplicates are kept.
    X
        ``(n_cells, n_genes)`` CSR matrix of the counts: float32 data, int32 indices and indptr
        (int64 only when nnz >= 2**31), sorted indices, no explicit zeros.
    sums
        Per-cell and per-gene sums (:class:`CountSums`).
    X_copy
        A copy of ``X`` with its own arrays, when asked for (``with_copy``); else None.
    """

    barcodes: list[str]
    genes: list[str]
    X: scipy.sparse.csr_matrix
    sums: CountSums
    X_copy: scipy.sparse.csr_matrix | None = None


# --- bytes ---------------------------------------------------------------------------------
_NL, _CR, _QUOTE, _SPACE, _TAB = 10, 13, 34, 32, 9
_PLUS, _MINUS, _DOT, _ZERO, _LOWER_E = 43, 45, 46, 48, 101
_ONE_PER_PAIR = 0x0001_0001_0001_0001  # times a 16-bit pair: the pair four times in 64 bits
_INT32_MAX = 2**31 - 1

# --- error codes set by the numba loop (0 = none) ------------------------------------------
_E_EMPTY_GENE = 1
_E_SHORT_ROW = 2
_E_LONG_ROW = 3
_E_TRAILING_SEPARATOR = 4
_E_EMPTY_VALUE = 5
_E_NOT_NUMBER = 6
_E_NEGATIVE = 7
_E_NOT_INTEGER = 8
_E_TOO_LARGE = 9
_E_UNCLOSED_QUOTE = 10
_E_AFTER_QUOTE = 11

# --- slots of the int64 state array shared by the numba loop and _RowParser ----------------
_S_ROWS = 0  # gene rows parsed so far
_S_NNZ = 1  # non-zeros stored so far
_S_NAMES = 2  # bytes of gene names stored so far
_S_LINE = 3  # 1-based line number of the next line to parse (of the error line after one)
_S_ERR = 4  # error code
_S_ERR_POS = 5  # byte range of the offending text in the buffer
_S_ERR_END = 6
_S_ERR_COL = 7  # 1-based field number of the error, 0 when not about one field
_S_ERR_FOUND = 8  # number of fields found on a row of the wrong length
_S_CHUNKS = 9  # chunks of the bucket pool in use
_N_STATE = 10

_JIT = {"nogil": True, "cache": True}


@intrinsic
def _load_int64(typingctx, buf, pos):
    """The 8 bytes of ``buf`` from ``pos`` as one little-endian int64 (unaligned load)."""

    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(array.data, [args[1]])
        return builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)

    return types.int64(buf, pos), codegen


@intrinsic
def _trailing_zero_bits(typingctx, x):
    """Number of trailing zero bits of a non-zero int64 (one ``tzcnt`` instruction)."""

    def codegen(context, builder, sig, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.int64(x), codegen


@numba.njit(**_JIT)
def _is_digit(c):
    return _ZERO <= c <= _ZERO + 9


@numba.njit(**_JIT)
def _digit_at(buf, int_start, n_int, frac_start, k):
    """The k-th digit of a number whose integer and fraction digits are read as one run."""
    return (buf[int_start + k] if k < n_int else buf[frac_start + k - n_int]) - _ZERO


@numba.njit(**_JIT)
def _parse_number(buf, a, b):
    """Parse ``buf[a:b]`` as a count: returns ``(value, error code)``.

    Grammar: spaces/tabs, optional sign, digits with an optional ``.`` and fraction, optional
    exponent, spaces/tabs; the value must be a whole number in ``[0, 2**31 - 1]``. ``-0`` is 0.
    """
    while a < b and (buf[a] == _SPACE or buf[a] == _TAB):
        a += 1
    while b > a and (buf[b - 1] == _SPACE or buf[b - 1] == _TAB):
        b -= 1
    if a == b:
        return 0, _E_EMPTY_VALUE
    negative = buf[a] == _MINUS
    if negative or buf[a] == _PLUS:
        a += 1
    i = a
    while i < b and _is_digit(buf[i]):
        i += 1
    n_int = i - a
    frac_start = i
    if i < b and buf[i] == _DOT:
        i += 1
        frac_start = i
        while i < b and _is_digit(buf[i]):
            i += 1
    n_frac = i - frac_start
    if n_int + n_frac == 0:
        return 0, _E_NOT_NUMBER
    exponent = 0
    if i < b and (buf[i] | 0x20) == _LOWER_E:
        i += 1
        exp_negative = i < b and buf[i] == _MINUS
        if i < b and (buf[i] == _PLUS or buf[i] == _MINUS):
            i += 1
        if i == b or not _is_digit(buf[i]):
            return 0, _E_NOT_NUMBER
        while i < b and _is_digit(buf[i]):
            # Capped: any exponent this large already makes the value zero, too large or
            # fractional, and the cap keeps the arithmetic in range.
            exponent = min(exponent * 10 + (buf[i] - _ZERO), 1_000_000)
            i += 1
        if exp_negative:
            exponent = -exponent
    if i != b:
        return 0, _E_NOT_NUMBER
    # value = (significant digits, without leading and trailing zeros) * 10**power
    n_digits = n_int + n_frac
    first = 0
    while first < n_digits and _digit_at(buf, a, n_int, frac_start, first) == 0:
        first += 1
    if first == n_digits:
        return 0, 0
    if negative:
        return 0, _E_NEGATIVE
    last = n_digits
    while _digit_at(buf, a, n_int, frac_start, last - 1) == 0:
        last -= 1
    power = exponent - n_frac + (n_digits - last)
    if power < 0:
        return 0, _E_NOT_INTEGER
    if last - first + power > 10:
        return 0, _E_TOO_LARGE
    value = 0
    for k in range(first, last):
        value = value * 10 + _digit_at(buf, a, n_int, frac_start, k)
    for _ in range(power):
        value *= 10
    if value > _INT32_MAX:
        return 0, _E_TOO_LARGE
    return value, 0


@numba.njit(**_JIT)
def _is_separator(buf, p, sep):
    c = buf[p]
    if c == _CR:
        return buf[p + 1] == _NL
    return c in (sep, _NL)


@numba.njit(**_JIT)
def _slow_value(buf, tok, sep):
    """Parse the value field at ``tok`` that the digits-only fast path did not accept.

    Returns ``(value, separator position, error code, text start, text end)``; the text range
    is the field's content, for error messages.
    """
    if buf[tok] == _QUOTE:
        q = tok + 1
        while buf[q] != _QUOTE:
            if buf[q] == _NL:
                return 0, q, _E_UNCLOSED_QUOTE, tok, q
            q += 1
        if not _is_separator(buf, q + 1, sep):
            end = q + 1
            while not _is_separator(buf, end, sep):
                end += 1
            return 0, end, _E_AFTER_QUOTE, tok, end
        value, err = _parse_number(buf, tok + 1, q)
        return value, q + 1, err, tok + 1, q
    q = tok
    while not _is_separator(buf, q, sep):
        q += 1
    value, err = _parse_number(buf, tok, q)
    return value, q, err, tok, q


@numba.njit(**_JIT)
def _first_newline(buf, start):
    """Index of the first newline in ``buf[start:]``, or -1."""
    for p in range(start, buf.size):
        if buf[p] == _NL:
            return p
    return -1


@numba.njit(**_JIT)
def _last_newline(buf, start):
    """Index of the last newline in ``buf[start:]``, or -1 (scans back from the end)."""
    for p in range(buf.size - 1, start - 1, -1):
        if buf[p] == _NL:
            return p
    return -1


@numba.njit(**_JIT)
def _count_fields(buf, line_start, sep):
    """Fields on the line at ``line_start`` and whether the last one is empty (for messages)."""
    fields = 1
    quoted = False
    p = line_start
    while buf[p] != _NL:
        if buf[p] == _QUOTE:
            quoted = not quoted
        elif buf[p] == sep and not quoted:
            fields += 1
        p += 1
    end = p - 1 if p > line_start and buf[p - 1] == _CR else p
    return fields, end > line_start and buf[end - 1] == sep


@numba.njit(**_JIT)
def _parse_rows(
    buf, start, stop, sep, n_cells, state, prefix, names, name_ends, row_lines, sums, pool, by_col
):
    """Parse the complete lines ``buf[start:stop]`` (``buf[stop - 1]`` is a newline).

    ``sep`` is the separator's byte (comma or tab): a runtime value, so one compiled loop
    serves both; on GEO's CSVs it executes 0.7% more instructions than with the comma as a
    constant (callgrind), within the noise of a full read.

    Each non-zero goes straight to the bucket of its cell (pass 1 of the transpose, see
    :class:`_RowParser`; ``pool`` is the buckets' arrays) as the key ``row << shift | cell &
    mask`` and the value. ``names`` gets the gene name bytes, ``name_ends[row]`` where they
    end and ``row_lines[row]`` the row's line number. ``sums`` (the :class:`CountSums` arrays)
    get the QC sums: per cell non-zeros, total and total over the genes whose name starts with
    ``prefix`` (none when it is empty); per gene non-zeros, total and whether it is such a gene.
    ``by_col`` is None, or for cells_x_genes rows (whose flagged genes are header columns, not
    rows) ``(column_flagged, row_flagged_total)``: the total of each row over the flagged
    columns goes to ``row_flagged_total[row]``. numba compiles one loop for each (None is a
    type of its own) and prunes the dead branches, so the genes x cells loop has no trace of it.
    The caller guarantees the capacity. Progress and errors go into ``state``; on an error it
    stops at once, with ``_S_LINE`` the error's line.
    """
    cell_nnz, cell_total, cell_flagged, gene_nnz, gene_total, gene_flagged = sums
    keys, values, chunk_next, bucket_pos, bucket_end, shift, chunk_bits = pool
    mask = (1 << shift) - 1
    zero_pairs = (_ZERO | sep << 8) * _ONE_PER_PAIR  # "0,0,0,0," or its tab twin
    n = buf.size
    rows = state[_S_ROWS]
    nnz = state[_S_NNZ]
    n_names = state[_S_NAMES]
    line = state[_S_LINE]
    n_chunks = state[_S_CHUNKS]
    err = 0
    err_pos = 0
    err_end = 0
    err_col = 0
    found = 0
    p = start
    while p < stop:
        line_start = p
        c = buf[p]
        if c == _NL or (c == _CR and buf[p + 1] == _NL):  # blank line
            p += 1 if c == _NL else 2
            line += 1
            continue
        # -- gene name: copied (unquoted) into `names`
        names_start = n_names
        if c == _QUOTE:
            q = p + 1
            while True:
                c = buf[q]
                if c == _NL:
                    err, err_pos, err_end, err_col = _E_UNCLOSED_QUOTE, p, q, 1
                    break
                if c == _QUOTE:
                    if buf[q + 1] != _QUOTE:
                        q += 1
                        break
                    q += 1  # "" is a literal quote
                names[n_names] = c
                n_names += 1
                q += 1
            if err:
                break
            if not _is_separator(buf, q, sep):
                end = q
                while not _is_separator(buf, end, sep):
                    end += 1
                err, err_pos, err_end, err_col = _E_AFTER_QUOTE, p, end, 1
                break
        else:
            q = p
            c = buf[q]
            while c != sep and c != _NL:
                names[n_names] = c
                n_names += 1
                q += 1
                c = buf[q]
        if n_names == names_start:
            err, err_pos, err_end, err_col = _E_EMPTY_GENE, p, q, 1
            break
        if buf[q] != sep:
            err, found = _E_SHORT_ROW, 1
            break
        name_ends[rows] = n_names
        row_lines[rows] = line
        flagged = 0 < prefix.size <= n_names - names_start
        for k in range(prefix.size if flagged else 0):
            flagged = flagged and names[names_start + k] == prefix[k]
        key_base = rows << shift
        row_nnz = 0
        row_total = 0
        row_flagged = 0
        # -- counts
        p = q + 1
        col = 0  # 0-based cell index of the field at p
        while True:
            # Skip "0," pairs 8 bytes at a time: no row ends in "0," and a match never spans
            # a newline, so loads past `stop` (still inside `buf`) are harmless.
            while p + 8 <= n:
                diff = _load_int64(buf, p) ^ zero_pairs
                if diff != 0:
                    pairs = _trailing_zero_bits(diff) >> 4
                    p += 2 * pairs
                    col += pairs
                    break
                p += 8
                col += 4
            if col >= n_cells:
                found, trailing = _count_fields(buf, line_start, sep)
                err = _E_TRAILING_SEPARATOR if trailing and found == n_cells + 2 else _E_LONG_ROW
                err_col = n_cells + 2
                break
            tok = p
            value = np.int64(buf[p]) - _ZERO
            ok = 0 <= value <= 9
            if ok:
                p += 1
                d = np.int64(buf[p]) - _ZERO
                while 0 <= d <= 9 and value <= _INT32_MAX:
                    value = value * 10 + d
                    p += 1
                    d = np.int64(buf[p]) - _ZERO
                c = buf[p]
                ok = value <= _INT32_MAX and _is_separator(buf, p, sep)
            if not ok:
                value, p, err, err_pos, err_end = _slow_value(buf, tok, sep)
                if err:
                    err_col = col + 2
                    break
                c = buf[p]
            if value != 0:
                b = col >> shift
                slot = bucket_pos[b]
                if slot == bucket_end[b]:  # the bucket's chunk is full: chain a new one
                    chunk_next[(slot - 1) >> chunk_bits] = n_chunks
                    slot = n_chunks << chunk_bits
                    bucket_end[b] = slot + (1 << chunk_bits)
                    n_chunks += 1
                keys[slot] = key_base | (col & mask)
                values[slot] = value
                bucket_pos[b] = slot + 1
                cell_nnz[col] += 1
                cell_total[col] += value
                if flagged:
                    cell_flagged[col] += value
                if by_col is not None and by_col[0][col]:
                    row_flagged += value
                row_nnz += 1
                row_total += value
            if c != sep:
                break
            p += 1
            col += 1
        if err:
            break
        if col + 1 < n_cells:
            err, found = _E_SHORT_ROW, col + 2
            break
        p += 1 if c == _NL else 2
        gene_nnz[rows] = row_nnz
        gene_total[rows] = row_total
        gene_flagged[rows] = flagged
        if by_col is not None:
            by_col[1][rows] = row_flagged
        nnz += row_nnz
        rows += 1
        line += 1
    state[_S_ROWS] = rows
    state[_S_NNZ] = nnz
    state[_S_CHUNKS] = n_chunks
    state[_S_NAMES] = n_names
    state[_S_LINE] = line
    state[_S_ERR] = err
    state[_S_ERR_POS] = err_pos
    state[_S_ERR_END] = err_end
    state[_S_ERR_COL] = err_col
    state[_S_ERR_FOUND] = found


@numba.njit(**_JIT)
def _place_buckets(pool, first_bucket, end_bucket, indptr, genes_out, data_out):
    """Pass 2 of the transpose: write the CSR rows of the cells in buckets ``[first, end)``.

    Each bucket's chunks are read in chain (hence gene) order and each entry goes to the next
    free slot of its cell's row, so rows come out sorted. Only one bucket's cursors
    (``1 << shift`` cells) are live at a time.
    """
    keys, values, chunk_next, bucket_pos, _, shift, chunk_bits = pool
    mask = (1 << shift) - 1
    n_cells = indptr.size - 1
    cursor = np.empty(1 << shift, dtype=np.int64)
    for b in range(first_bucket, end_bucket):
        first_cell = b << shift
        for j in range(min(1 << shift, n_cells - first_cell)):
            cursor[j] = indptr[first_cell + j]
        chunk = b  # bucket b starts in chunk b
        while chunk >= 0:
            start = chunk << chunk_bits
            following = chunk_next[chunk]
            end = start + (1 << chunk_bits) if following >= 0 else bucket_pos[b]
            for k in range(start, end):
                key = keys[k]
                slot = cursor[key & mask]
                cursor[key & mask] = slot + 1
                genes_out[slot] = key >> shift
                data_out[slot] = values[k]
            chunk = following


_MADVISE_LOCK = threading.Lock()


@contextlib.contextmanager
def _small_pages() -> Iterator[None]:
    """Allocate arrays without numpy's transparent-huge-page advice inside the block.

    numpy advises the kernel to back arrays of 4 MB or more with 2 MB pages. On the virtual
    machines this runs on, first touches of such pages are slow and erratic: the matrices of
    a 600 MB file took 0.45-0.60 s to read with them and 0.40-0.41 s with 4 KB pages (eight
    fresh processes each, interleaved; the kernel time went from 0.13-0.31 s to 0.06-0.10 s).
    The advice is a process-wide switch in numpy; it is restored on exit.
    """
    core = getattr(np, "_core", None) or getattr(np, "core", None)  # numpy 2 / 1.26
    switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if switch is None:
        yield
        return
    with _MADVISE_LOCK:
        previous = switch(False)
        try:
            yield
        finally:
            switch(previous)


def _grown(array: np.ndarray, used: int, needed: int) -> np.ndarray:
    """``array`` with room for ``needed`` items, keeping the first ``used`` (doubling growth)."""
    if array.size >= needed:
        return array
    with _small_pages():
        bigger = np.empty(max(needed, 2 * array.size), dtype=array.dtype)
    bigger[:used] = array[:used]
    return bigger


#: log2 of the entries per chunk of a bucket (4096: 32 KB of keys and values).
_CHUNK_BITS = 12

#: log2 of the cells per bucket in the two-pass transpose (128: cursors fit in L1).
_BUCKET_SHIFT = 7

#: Below this many non-zeros the final pass runs in one thread (a thread start costs more).
_PARALLEL_PLACE_MIN_NNZ = 1 << 20

#: The shift of cells_x_genes keys: a row << 32 | column truncated to int32 is the column.
_ROWS_IN_ORDER_SHIFT = 32

_NA_STRINGS = frozenset(
    ["#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "1.#IND", "1.#QNAN", "<NA>", "N/A"]
    + ["NA", "NULL", "None", "n/a", "null"]
)


def _value_problem(code: int, text: str, sep_name: str) -> str:
    shown = quote_text(text)
    rule = "counts must be non-negative integers"
    if code == _E_NOT_NUMBER:
        word = text.strip(" \t").lower().lstrip("+-")
        if word == "nan":
            return f"{shown} is NaN (not a number): {rule}; write 0 for a cell without counts"
        if word in ("inf", "infinity"):
            return f"{shown} is infinite: {rule}"
        if text.strip(" \t") in _NA_STRINGS:
            return f"{shown} marks a missing value: every cell needs a count (write 0 for none)"
        return f"{shown} is not a number: {rule}"
    if code == _E_NEGATIVE:
        return f"{shown} is negative: {rule}"
    if code == _E_NOT_INTEGER:
        return f"{shown} is not a whole number: {rule}"
    if code == _E_TOO_LARGE:
        return f"{shown} is too large: counts must be at most {_INT32_MAX} (the int32 range)"
    if code == _E_EMPTY_VALUE:
        return "the count is empty: every cell needs a count (write 0 for none)"
    if code == _E_UNCLOSED_QUOTE:
        return (
            f"the quoted field {shown} is not closed before the end of the line "
            "(line breaks inside quoted fields are not supported)"
        )
    assert code == _E_AFTER_QUOTE, code
    return f"unexpected text after the closing quote in {shown}: a field ends at a {sep_name}"


class _RowParser:
    """Feeds chunks of complete lines to :func:`_parse_rows`; owns the arrays; builds the CSR.

    The parser's words are those of ``genes_x_cells`` files: a row is a gene, a header column a
    cell. For ``cells_x_genes`` files the roles swap (a row is a cell), and so do the sums.

    genes_x_cells: the transpose to CSR is a two-pass bucket sort. Pass 1 happens while
    parsing: each non-zero is appended to the bucket of its cell (128 cells per bucket), as a
    key (gene, cell within the bucket) and a value. A bucket is a chain of fixed-size chunks
    taken from one pool as it fills, so nothing needs to be known in advance, and the ~100
    write cursors stay in L1, unlike a direct scatter to thousands of cell rows. Pass 2
    (:meth:`to_csr`) writes each bucket's rows, the buckets split between two threads
    (:func:`_place_buckets`).

    cells_x_genes: each row's non-zeros, in file order, are already a CSR row. The same loop
    writes them to a single bucket whose key is the column alone (a shift of 32 puts the row
    outside the int32 key), so the pool's arrays fill up, one row after the other, with the
    CSR's indices and data: no transpose at all. ``column_flagged`` marks the header's genes
    whose per-cell (row) total is taken on the way.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        n_cells: int,
        first_line: int,
        nnz_hint: int,
        flag_prefix: bytes,
        layout: TextLayout,
        column_flagged: np.ndarray | None = None,
    ) -> None:
        self._path = path
        self._layout = layout
        self._column_flagged = column_flagged
        self._row_flagged_total = np.zeros(1024, dtype=np.int64)
        self._sep = ord(layout.sep)
        self._n_cells = n_cells
        self._first_line = first_line
        self._prefix = np.frombuffer(flag_prefix, dtype=np.uint8)
        self._state = np.zeros(_N_STATE, dtype=np.int64)
        self._state[_S_LINE] = first_line
        self._name_ends = np.zeros(1024, dtype=np.int64)
        self._row_lines = np.zeros(1024, dtype=np.int64)
        self._names = np.empty(1 << 16, dtype=np.uint8)
        self._gene_nnz = np.zeros(1024, dtype=np.int64)
        self._gene_total = np.zeros(1024, dtype=np.int64)
        self._gene_flagged = np.zeros(1024, dtype=np.bool_)
        self._cell_nnz = np.zeros(n_cells, dtype=np.int64)
        self._cell_total = np.zeros(n_cells, dtype=np.int64)
        self._cell_flagged = np.zeros(n_cells, dtype=np.int64)
        if layout.rows_are_genes:
            self._shift = min(_BUCKET_SHIFT, (n_cells - 1).bit_length())
        else:  # one bucket, keys = columns (see the class docstring)
            self._shift = _ROWS_IN_ORDER_SHIFT
        self._bucket_starts = np.arange(0, n_cells, 1 << self._shift)
        n_buckets = self._bucket_starts.size
        # Bucket b starts in chunk b; a full chunk links to the next one in `_chunk_next`.
        self._bucket_pos = np.arange(n_buckets, dtype=np.int64) << _CHUNK_BITS
        self._bucket_end = self._bucket_pos + (1 << _CHUNK_BITS)
        self._state[_S_CHUNKS] = n_buckets
        # np.empty only reserves address space: pages count towards RSS once written, so an
        # upper-bound hint costs nothing and saves the copies of geometric growth.
        chunks = n_buckets + (nnz_hint >> _CHUNK_BITS) + 1
        with _small_pages():
            try:
                self._keys = np.empty(chunks << _CHUNK_BITS, dtype=np.int32)
                self._values = np.empty(self._keys.size, dtype=np.float32)
            except MemoryError:  # address space is limited (ulimit -v): grow as needed instead
                chunks = n_buckets + 16
                self._keys = np.empty(chunks << _CHUNK_BITS, dtype=np.int32)
                self._values = np.empty(self._keys.size, dtype=np.float32)
        self._chunk_next = np.full(chunks, -1, dtype=np.int64)

    def _pool(self) -> tuple:
        """The bucket arrays, as :func:`_parse_rows` and :func:`_place_buckets` take them."""
        return (
            self._keys,
            self._values,
            self._chunk_next,
            self._bucket_pos,
            self._bucket_end,
            self._shift,
            _CHUNK_BITS,
        )

    def feed(self, chunk: np.ndarray, start: int, stop: int) -> None:
        """Parse the complete lines ``chunk[start:stop]``; raise CountMatrixError on a problem."""
        size = stop - start
        rows, _, n_names = (int(v) for v in self._state[:3])
        # Capacity bounds: a non-zero takes >= 2 bytes (digit and separator), a gene row
        # >= 2 * n_cells + 1, a name <= its bytes; so the numba loop never checks capacity.
        max_rows = size // (2 * self._n_cells + 1) + 1
        self._name_ends = _grown(self._name_ends, rows, rows + max_rows)
        self._row_lines = _grown(self._row_lines, rows, rows + max_rows)
        self._gene_nnz = _grown(self._gene_nnz, rows, rows + max_rows)
        self._gene_total = _grown(self._gene_total, rows, rows + max_rows)
        self._gene_flagged = _grown(self._gene_flagged, rows, rows + max_rows)
        by_column = None
        if self._column_flagged is not None:
            self._row_flagged_total = _grown(self._row_flagged_total, rows, rows + max_rows)
            by_column = (self._column_flagged, self._row_flagged_total)
        self._names = _grown(self._names, n_names, n_names + size)
        # New chunks: one per full chunk of new entries, plus one partly filled per bucket.
        used_chunks = int(self._state[_S_CHUNKS])
        needed = used_chunks + ((size // 2 + 1) >> _CHUNK_BITS) + self._bucket_pos.size + 1
        if self._chunk_next.size < needed:
            self._chunk_next = _grown(self._chunk_next, used_chunks, needed)
            self._chunk_next[used_chunks:] = -1
            self._keys = _grown(self._keys, used_chunks << _CHUNK_BITS, needed << _CHUNK_BITS)
            self._values = _grown(self._values, used_chunks << _CHUNK_BITS, needed << _CHUNK_BITS)
        sums = (
            self._cell_nnz,
            self._cell_total,
            self._cell_flagged,
            self._gene_nnz,
            self._gene_total,
            self._gene_flagged,
        )
        _parse_rows(
            chunk,
            start,
            stop,
            self._sep,
            self._n_cells,
            self._state,
            self._prefix,
            self._names,
            self._name_ends,
            self._row_lines,
            sums,
            self._pool(),
            by_column,
        )
        if self._state[_S_ERR]:
            raise self._error(chunk)
        if self._layout.rows_are_genes and self.n_genes > 1 << (31 - self._shift):
            # the keys (gene, cell) are int32
            problem = f"more than {1 << (31 - self._shift)} gene rows are not supported"
            raise CountMatrixError(self._path, problem)

    def _error(self, chunk: np.ndarray) -> CountMatrixError:
        code, pos, end, col, found = (int(v) for v in self._state[_S_ERR : _S_ERR_FOUND + 1])
        line = int(self._state[_S_LINE])
        text = chunk[pos:end].tobytes().decode("utf-8", "replace")
        n, layout = self._n_cells, self._layout
        expected = (
            f"expected {n + 1} fields (a {layout.row_item} and one count for each of the {n}"
            f" {layout.column_kind}s in the header) but found {found}"
        )
        if code == _E_SHORT_ROW:
            return CountMatrixError(self._path, f"too few fields: {expected}", line=line)
        if code == _E_LONG_ROW:
            hint = ""
            if line == self._first_line and found == n + 2:
                hint = " (if every row has one field more, the header lacks its corner field)"
            problem = f"too many fields: {expected}{hint}"
            return CountMatrixError(self._path, problem, line=line, column=col)
        if code == _E_TRAILING_SEPARATOR:
            problem = f"the line ends with a {layout.sep_name} (an empty last field): {expected}"
            return CountMatrixError(self._path, problem, line=line, column=col)
        if code == _E_EMPTY_GENE:
            problem = f"the {layout.row_item} (first field) is empty: every row must start with one"
            return CountMatrixError(self._path, problem, line=line, column=1)
        problem = _value_problem(code, text, layout.sep_name)
        if col == 1:  # quoting problems in the gene name
            problem = problem.replace("a field ends", f"the {layout.row_item} ends")
        return CountMatrixError(self._path, problem, line=line, column=col)

    @property
    def n_genes(self) -> int:
        return int(self._state[_S_ROWS])

    def genes(self) -> list[str]:
        """The gene names (the first field of each row), decoded from UTF-8."""
        rows = self.n_genes
        ends = self._name_ends[:rows].tolist()
        raw = self._names[: ends[-1] if ends else 0].tobytes()
        starts = [0, *ends[:-1]]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            row = int(np.searchsorted(self._name_ends[:rows], exc.start, side="right"))
            name = raw[starts[row] : ends[row]].decode("utf-8", "replace")
            problem = f"the {self._layout.row_item} {quote_text(name)} is not UTF-8 text"
            line = int(self._row_lines[row])
            raise CountMatrixError(self._path, problem, line=line, column=1) from None
        if len(text) == len(raw):  # ASCII: byte offsets are character offsets
            return [text[a:b] for a, b in zip(starts, ends, strict=True)]
        return [raw[a:b].decode("utf-8") for a, b in zip(starts, ends, strict=True)]

    def line_of_row(self, row: int) -> int:
        """The line number of the ``row``-th data row (0-based)."""
        return int(self._row_lines[row])

    def sums(self) -> CountSums:
        """Per-cell and per-gene QC sums (see :class:`CountSums`), of genes_x_cells rows."""
        rows = self.n_genes
        return CountSums(
            cell_nnz=self._cell_nnz,
            cell_total=self._cell_total,
            cell_flagged_total=self._cell_flagged,
            gene_nnz=self._gene_nnz[:rows].copy(),
            gene_total=self._gene_total[:rows].copy(),
            gene_flagged=self._gene_flagged[:rows].copy(),
        )

    def transposed_sums(self) -> CountSums:
        """The QC sums of cells_x_genes rows: the loop's per-row sums are the cells', its
        per-column sums the genes', and the flagged genes those of ``column_flagged``."""
        rows = self.n_genes
        flagged = self._column_flagged
        return CountSums(
            cell_nnz=self._gene_nnz[:rows].copy(),
            cell_total=self._gene_total[:rows].copy(),
            cell_flagged_total=self._row_flagged_total[:rows].copy(),
            gene_nnz=self._cell_nnz,
            gene_total=self._cell_total,
            gene_flagged=np.zeros(self._n_cells, bool) if flagged is None else flagged.copy(),
        )

    def to_csr(self, with_copy: bool = False) -> list[scipy.sparse.csr_matrix]:
        """The cells x genes CSR matrix, and a copy of it if asked; the bucket pool is released.

        The copy is written over the pool's arrays, which have the right dtypes, are dead once
        the matrix is placed and are already mapped: a fresh 140 MB copy would cost as much
        again in page faults as in copying.
        """
        if not self._layout.rows_are_genes:
            return self._rows_in_order(with_copy)
        n_genes, nnz = self.n_genes, int(self._state[_S_NNZ])
        index_dtype = np.int32 if nnz < 2**31 else np.int64
        indptr = np.zeros(self._n_cells + 1, dtype=index_dtype)
        np.cumsum(self._cell_nnz, out=indptr[1:])
        with _small_pages():
            genes_out = np.empty(nnz, dtype=index_dtype)
            data_out = np.empty(nnz, dtype=np.float32)
        pool, out = self._pool(), (indptr, genes_out, data_out)
        n_buckets = self._bucket_starts.size
        if nnz < _PARALLEL_PLACE_MIN_NNZ:
            _place_buckets(pool, 0, n_buckets, *out)
        else:  # split the buckets where half of the non-zeros are
            middle = int(np.searchsorted(indptr[self._bucket_starts], nnz // 2))
            _in_two_threads(
                lambda: _place_buckets(pool, 0, middle, *out),
                lambda: _place_buckets(pool, middle, n_buckets, *out),
            )
        pool = None  # no reference to the pool's arrays may outlive their resize below
        matrices = [(data_out, genes_out, indptr)]
        if with_copy:
            if index_dtype is np.int32:
                indices, data = self._keys, self._values
                _in_two_threads(
                    lambda: np.copyto(indices[:nnz], genes_out),
                    lambda: np.copyto(data[:nnz], data_out),
                )
                # Shrink in place (realloc/mremap: no copy). Without this, scipy would copy
                # a view of the first nnz items, as a small part of a large array.
                self._keys = self._values = None
                for array in (indices, data):
                    array.resize(nnz, refcheck=False)  # no other reference is left
            else:
                indices, data = genes_out.copy(), data_out.copy()
            matrices.append((data, indices, indptr.copy()))
        self._keys = self._values = self._chunk_next = None
        result = []
        for arrays in matrices:
            X = scipy.sparse.csr_matrix(arrays, shape=(self._n_cells, n_genes))
            X.has_sorted_indices = True
            X.has_canonical_format = True
            result.append(X)
        return result

    def _rows_in_order(self, with_copy: bool) -> list[scipy.sparse.csr_matrix]:
        """cells_x_genes: the CSR whose rows are the file's rows, from the pool as it is."""
        n_rows, nnz = self.n_genes, int(self._state[_S_NNZ])
        index_dtype = np.int32 if nnz < 2**31 else np.int64
        indptr = np.zeros(n_rows + 1, dtype=index_dtype)
        np.cumsum(self._gene_nnz[:n_rows], out=indptr[1:])
        indices, data = self._keys, self._values
        self._keys = self._values = self._chunk_next = None
        for array in (indices, data):
            array.resize(nnz, refcheck=False)  # in place, as in to_csr; no other reference
        if index_dtype is not np.int32:
            indices = indices.astype(index_dtype)
        matrices = [(data, indices, indptr)]
        if with_copy:
            with _small_pages():
                copies = [np.empty_like(data), np.empty_like(indices)]
            _in_two_threads(
                lambda: np.copyto(copies[0], data), lambda: np.copyto(copies[1], indices)
            )
            matrices.append((copies[0], copies[1], indptr.copy()))
        result = []
        for arrays in matrices:
            X = scipy.sparse.csr_matrix(arrays, shape=(n_rows, self._n_cells))
            X.has_sorted_indices = True
            X.has_canonical_format = True
            result.append(X)
        return result


def _in_two_threads(first: Callable[[], object], second: Callable[[], object]) -> None:
    """Run ``second`` in a new thread and ``first`` in this one (both release the GIL)."""
    thread = threading.Thread(target=second)
    thread.start()
    try:
        first()
    finally:
        thread.join()


_NO_BYTES = np.empty(0, dtype=np.uint8)
_NEWLINE = np.array([_NL], dtype=np.uint8)


def parse_count_matrix(
    path: str | os.PathLike[str],
    flag_prefix: str = "",
    *,
    sep: str | None = None,
    orientation: str = GENES_X_CELLS,
    with_copy: bool = False,
) -> ParsedCountMatrix:
    """Read a count matrix as text (CSV or TSV, gzipped or not) as a cells x genes CSR matrix.

    The result equals ``csr_matrix(pd.read_csv(path, sep=sep, index_col=0).T.values.astype(
    np.float32))`` (canonical; without the ``.T`` for ``cells_x_genes``), with ``barcodes``/
    ``genes`` equal to the frame's columns/index as strings; but it streams, never holds a
    dense matrix, and reads and parses on two cores.

    Parameters
    ----------
    path
        Text, plain or gzipped (single or multi-member). ``genes_x_cells``: a header row
        (corner field, then cell barcodes), then one row per gene (gene name, then one
        non-negative integer count per cell). ``cells_x_genes``: a header row of gene symbols
        (repeats allowed), then one row per cell (barcode, then one count per gene).
    flag_prefix
        Genes whose name starts with this (e.g. ``"MT-"``) are also summed on their own, per
        cell, in :attr:`CountSums.cell_flagged_total`.
    sep
        ``","`` or ``"\t"``; None to detect it from the header line (the more frequent of the
        two outside quotes).
    orientation
        ``"genes_x_cells"`` (GEO's layout) or ``"cells_x_genes"``.
    with_copy
        Also return an independent copy of ``X`` (its own arrays), e.g. for a raw-counts
        layer; cheaper than a later ``X.copy()`` (see :meth:`_RowParser.to_csr`).

    Returns
    -------
    ParsedCountMatrix
        Barcodes, gene names and the ``(n_cells, n_genes)`` float32 CSR matrix.

    Raises
    ------
    CountMatrixError
        If the file is not a well-formed matrix of non-negative integer counts (or a barcode
        repeats). The message names the file, the 1-based line and field (column) and the
        problem.
    """
    TextLayout(orientation=orientation)  # a ValueError for an unknown orientation, up front
    with decompressed_blocks(path) as blocks:
        # The header: everything up to the first newline (quoted fields may not span lines).
        head: list[bytes] = []
        block, pos = _NO_BYTES, 0
        for block in blocks:
            newline = _first_newline(block, 0)
            if newline >= 0:
                head.append(block[:newline].tobytes())
                pos = newline + 1
                break
            head.append(block.tobytes())
        else:
            block, pos = _NO_BYTES, 0
            if not any(head):
                raise CountMatrixError(
                    path, "the file contains no data (it decompresses to nothing)"
                )
        header = b"".join(head)
        layout = header_layout(header, sep, orientation)
        _, columns = parse_header(path, header, layout)
        # Each non-zero takes >= 2 bytes of text: with an exact size hint, a capacity bound.
        nnz_hint = uncompressed_size_hint(path) // 2 + 1
        if layout.rows_are_genes:
            rows = _RowParser(path, len(columns), 2, nnz_hint, flag_prefix.encode(), layout)
        else:  # the prefix is about the header's genes, not the rows' barcodes
            flagged = np.fromiter(
                (bool(flag_prefix) and g.startswith(flag_prefix) for g in columns),
                bool,
                len(columns),
            )
            rows = _RowParser(path, len(columns), 2, nnz_hint, b"", layout, flagged)
        # Data rows: parse whole lines in place; a line cut by block edges is copied together
        # (a copy of one line, not of the block; blocks are recycled once we ask for the next).
        partial: list[np.ndarray] = []
        while True:
            if partial:
                newline = _first_newline(block, pos)
                if newline < 0:
                    partial.append(block[pos:].copy())
                    pos = block.size
                else:
                    line = np.concatenate([*partial, block[pos : newline + 1]])
                    partial.clear()
                    rows.feed(line, 0, line.size)
                    pos = newline + 1
            if not partial:
                last_newline = _last_newline(block, pos)
                if last_newline >= 0:
                    rows.feed(block, pos, last_newline + 1)
                    pos = last_newline + 1
                if pos < block.size:
                    partial.append(block[pos:].copy())
            block = next(blocks, None)
            if block is None:
                break
            pos = 0
        if partial:  # no final newline
            line = np.concatenate([*partial, _NEWLINE])
            rows.feed(line, 0, line.size)
    if rows.n_genes == 0:
        problem = f"the file has a header row but no {layout.row_kind} rows"
        raise CountMatrixError(path, problem)
    if layout.rows_are_genes:
        matrices = rows.to_csr(with_copy)
        barcodes, genes, sums = columns, rows.genes(), rows.sums()
    else:
        barcodes, genes = rows.genes(), columns
        _check_unique_row_barcodes(path, barcodes, rows)
        matrices = rows.to_csr(with_copy)
        sums = rows.transposed_sums()
    return ParsedCountMatrix(
        barcodes=barcodes,
        genes=genes,
        X=matrices[0],
        sums=sums,
        X_copy=matrices[1] if with_copy else None,
    )


def _check_unique_row_barcodes(
    path: str | os.PathLike[str], barcodes: list[str], rows: _RowParser
) -> None:
    """cells_x_genes: a CountMatrixError naming the line where a barcode repeats."""
    if len(set(barcodes)) == len(barcodes):
        return
    seen: dict[str, int] = {}
    for row, barcode in enumerate(barcodes):
        first = seen.setdefault(barcode, row)
        if first != row:
            line = rows.line_of_row(row)
            problem = (
                f"barcode {quote_text(barcode)} appears twice, on lines"
                f" {rows.line_of_row(first)} and {line}: barcodes must be unique"
            )
            raise CountMatrixError(path, problem, line=line, column=1)


def warm_up(orientations: tuple[str, ...] = (GENES_X_CELLS,)) -> None:
    """Load the parser's machine code now, not in the first call.

    numba compiles the parser on first use and caches the machine code on disk
    (``__pycache__``); loading it back still takes a few tenths of a second, the time a
    whole file takes to parse. Processes that parse many files (the ingest workers) call this
    when they start, as they import their other modules; it parses a tiny file.

    Each orientation's loop is compiled and loaded on its own (cells_x_genes rows take one
    more sum): by default only GEO's genes_x_cells one is loaded, the hot path; the separator
    is a runtime value, so one loop serves commas and tabs.
    """
    with tempfile.TemporaryDirectory(prefix="sc-assets-warm-up-") as folder:
        path = os.path.join(folder, "warm_up.csv.gz")
        with open(path, "wb") as f:
            f.write(gzip.compress(b"gene,AAAC-1,AAAC-2\nMT-G1,0,1\nG2,2,0\n"))
        for orientation in orientations:
            parse_count_matrix(path, flag_prefix="MT-", orientation=orientation)
