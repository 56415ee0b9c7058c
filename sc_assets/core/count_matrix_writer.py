"""Write a count matrix as a GEO per-sample file: a gzipped CSV with genes as rows.

The default layout is exactly that of GSE174609's ``GSM5320459_Ctrl1_count_matrix.csv.gz``::

    ,AAACCCACAAGCGATG-1,AAACCCACATCGGTTA-1,...
    MIR1302-2HG,0,0,...
    FAM138A,0,1,...

(header: an empty corner field then the cell barcodes; one row per gene: the symbol then one
integer per cell; ``\\n`` line endings; no quoting). The project's tests and demo data are
made with this writer, so it is exact: ``pd.read_csv(path, index_col=0)`` gives back the
counts transposed, the genes (duplicates kept) and the barcodes.

The other text layouts the readers accept are options: tab-separated (``sep="\\t"``),
uncompressed (``compress=False``) and a row per cell (``orientation="cells_x_genes"``: a
header of gene symbols, then each barcode and its counts).

A full-size sample is ~633 MB of text, so the text is formatted by a numba kernel into a
reusable byte buffer, a block of genes at a time, straight from the sparse matrix: nothing
dense of size cells x genes (let alone of Python strings) is ever built.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numba
import numpy as np
import scipy.sparse as sp

from sc_assets.core.atomic import atomic_path

try:  # ISA-L deflate is ~5-10x faster than zlib at similar ratios on this kind of text
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - isal is a project dependency
    _isal_zlib = None

DEFAULT_COMPRESSLEVEL = 6
"""gzip's usual default level. With python-isal it means ISA-L level 2, which compresses a
full-size sample (~630 MB of text) in under a second; zlib needs ~10 s for it."""

_BLOCK_BYTES = 16 * 2**20
"""Target size of one formatted text block: large enough to amortise the calls into the kernel
and the compressor, small enough to keep the memory used for text bounded."""

_MAX_DIGITS = 20
"""Characters of the widest int64 value, ``-9223372036854775808``."""

_FORBIDDEN = {",": re.compile(r'[,"\r\n]'), "\t": re.compile(r'[\t"\r\n]')}
"""Per separator, characters that would change the table's shape when written unquoted."""

_SEPARATOR_NAMES = {",": "comma", "\t": "tab"}
_ORIENTATIONS = ("genes_x_cells", "cells_x_genes")

_GZIP_WBITS = 31
"""``wbits`` selecting a gzip container (16 + 15): header with mtime 0 and no file name, so
identical data gives identical bytes whatever the (temporary) file is called."""

CountsLike = ad.AnnData | sp.spmatrix | sp.sparray | np.ndarray


def write_count_matrix(
    path: str | os.PathLike[str],
    counts: CountsLike,
    genes: Sequence[str] | None = None,
    barcodes: Sequence[str] | None = None,
    *,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
    sep: str = ",",
    compress: bool = True,
    orientation: str = "genes_x_cells",
) -> Path:
    """Write cells x genes counts as a GEO-style genes x cells gzipped CSV, atomically.

    Or as any other text layout the readers accept (``sep``, ``compress``, ``orientation``).

    Parameters
    ----------
    path
        Output file, e.g. ``data/GSM5320459_Ctrl1_count_matrix.csv.gz``. Its folder is created
        if missing; an existing file is replaced atomically (readers see the old file or the
        complete new one, never a partial one), see :func:`sc_assets.core.atomic.atomic_path`.
    counts
        Cells x genes counts: a scipy sparse matrix or array (CSR, CSC, COO...), a dense
        2-D numpy array, or an AnnData (its ``X``). Values must be integers, or floats with
        integer values (e.g. the float32 counts of an AnnData); negative integers are written
        as they are, so tests can craft invalid inputs.
    genes
        One symbol per column of ``counts``, written in this order; duplicates are allowed
        (the 10x reference has some). Defaults to ``var_names`` for an AnnData; required
        otherwise.
    barcodes
        One barcode per row of ``counts``. Defaults to ``obs_names`` for an AnnData; required
        otherwise.
    compresslevel
        gzip level, 0 (no compression) to 9 (smallest), as for :func:`gzip.open`. With
        python-isal installed, which compresses ~10x faster than zlib, level 0 stays
        uncompressed (zlib) and levels 1-9 map onto ISA-L's levels 0-3 (1 -> 0, 2-4 -> 1,
        5-7 -> 2, 8-9 -> 3).
    sep
        ``","`` (CSV) or ``"\\t"`` (TSV).
    compress
        gzip the text (True), or write it as it is (False; ``compresslevel`` is then unused).
    orientation
        ``"genes_x_cells"`` (a row per gene, GEO's layout) or ``"cells_x_genes"`` (a header of
        gene symbols, then a row per cell: its barcode and its counts).

    Returns
    -------
    The path written.

    Raises
    ------
    ValueError
        If the shapes of ``counts``, ``genes`` and ``barcodes`` disagree, a value is not an
        integer (NaN, inf, 0.5...), a name contains the separator, a double quote or a line
        break, or ``compresslevel``, ``sep`` or ``orientation`` is not one of its values.
    TypeError
        If ``counts`` is not numeric, a name is not a string, or ``genes``/``barcodes`` are
        missing for a matrix that is not an AnnData.

    Notes
    -----
    ``pd.read_csv`` itself turns NA-like names (``"NA"``, ``"nan"``, an empty string...) into
    NaN and renames repeated barcodes (``X.1``), so those do not round-trip through pandas,
    although they are written exactly as given.
    """
    if not 0 <= compresslevel <= 9:
        raise ValueError(f"compresslevel must be between 0 and 9, got {compresslevel}")
    if sep not in _FORBIDDEN:
        raise ValueError(f"sep must be ',' or '\\t', got {sep!r}")
    if orientation not in _ORIENTATIONS:
        raise ValueError(f"orientation must be one of {', '.join(_ORIENTATIONS)}: {orientation!r}")
    matrix, genes, barcodes = _resolve_inputs(counts, genes, barcodes)
    rows_are_genes = orientation == "genes_x_cells"
    # The kernel writes one file row per column of a CSC matrix: genes x cells files take the
    # counts' columns (genes), cells x genes files those of the transpose (cells).
    csc = _integer_csc(matrix if rows_are_genes else matrix.T)
    n_columns, n_rows = csc.shape
    n_cells, n_genes = (n_columns, n_rows) if rows_are_genes else (n_rows, n_columns)
    gene_list = _checked_names(genes, "genes", n_genes, sep)
    barcode_list = _checked_names(barcodes, "barcodes", n_cells, sep)
    row_names, column_names = (
        (gene_list, barcode_list) if rows_are_genes else (barcode_list, gene_list)
    )

    encoded = [name.encode() for name in row_names]
    name_ends = np.cumsum([len(name) for name in encoded], dtype=np.int64)
    name_offsets = np.concatenate([np.zeros(1, np.int64), name_ends])
    name_bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    header = "".join(sep + name for name in column_names).encode() + b"\n"

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        compressor = _gzip_compressor(compresslevel) if compress else _Uncompressed()
        out.write(compressor.compress(header))
        # Rows of ~2 bytes per column: choose how many rows make a block of ~_BLOCK_BYTES.
        rows_per_block = max(1, _BLOCK_BYTES // (2 * n_columns + 1))
        buffer = np.empty(0, dtype=np.uint8)
        for start in range(0, n_rows, rows_per_block):
            stop = min(start + rows_per_block, n_rows)
            # Upper bound of the block's size: each column takes the separator plus at least
            # one digit, a stored value at most _MAX_DIGITS - 1 more.
            bound = (
                int(name_offsets[stop] - name_offsets[start])
                + (stop - start) * (2 * n_columns + 1)
                + (_MAX_DIGITS - 1) * int(csc.indptr[stop] - csc.indptr[start])
            )
            if buffer.size < bound:
                buffer = np.empty(bound, dtype=np.uint8)
            size = _format_rows(
                csc.indptr,
                csc.indices,
                csc.data,
                name_bytes,
                name_offsets,
                start,
                stop,
                n_columns,
                ord(sep),
                buffer,
            )
            out.write(compressor.compress(buffer[:size]))
        out.write(compressor.flush())
    return path


def _resolve_inputs(
    counts: CountsLike, genes: Sequence[str] | None, barcodes: Sequence[str] | None
) -> tuple[sp.spmatrix | sp.sparray | np.ndarray, Sequence[str], Sequence[str]]:
    if isinstance(counts, ad.AnnData):
        genes = counts.var_names if genes is None else genes
        barcodes = counts.obs_names if barcodes is None else barcodes
        return counts.X, genes, barcodes
    if genes is None or barcodes is None:
        raise TypeError("genes and barcodes are required unless counts is an AnnData")
    return counts, genes, barcodes


def _integer_csc(matrix: sp.spmatrix | sp.sparray | np.ndarray) -> sp.csc_array:
    """Cells x genes as a canonical CSC array with int64 values (one gene = one column)."""
    if matrix is None:
        raise TypeError("counts has no matrix (AnnData.X is None)")
    if sp.issparse(matrix):
        csc = sp.csc_array(matrix)
    else:
        array = np.asarray(matrix)
        if array.ndim != 2:
            raise ValueError(f"counts must be 2-D (cells x genes), got shape {array.shape}")
        csc = sp.csc_array(array)
    if not csc.has_canonical_format:
        # The kernel walks each column's row indices in order, once: sort them and merge
        # repeats, on a copy so that the caller's matrix is left as it was.
        csc = csc.copy()
        csc.sum_duplicates()
    data = csc.data
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise ValueError("counts contain NaN or infinite values")
        if not (data == np.trunc(data)).all():
            raise ValueError("counts contain values that are not integers")
        if data.size and np.abs(data).max() >= 2.0**63:
            raise ValueError("counts contain values too large for a 64-bit integer")
    elif data.dtype.kind == "u":
        if data.size and data.max() > np.iinfo(np.int64).max:
            raise ValueError("counts contain values too large for a 64-bit integer")
    elif data.dtype.kind != "i":
        raise TypeError(f"counts must hold integers or integer-valued floats, not {data.dtype}")
    # One value dtype and int64 indices keep the kernel to a single compiled specialisation.
    return sp.csc_array(
        (
            data.astype(np.int64, copy=False),
            csc.indices.astype(np.int64, copy=False),
            csc.indptr.astype(np.int64, copy=False),
        ),
        shape=csc.shape,
    )


def _checked_names(names: Sequence[str], what: str, expected: int, sep: str) -> list[str]:
    names = list(names)
    if len(names) != expected:
        raise ValueError(f"{len(names)} {what} given for a matrix with {expected} of them")
    forbidden = _FORBIDDEN[sep]
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{what} must be strings, got {name!r}")
        if forbidden.search(name):
            raise ValueError(
                f"{what}: {name!r} contains a {_SEPARATOR_NAMES[sep]}, a double quote or a line "
                "break, which cannot be written unquoted"
            )
    return names


class _Uncompressed:
    """The compressor interface (``compress``/``flush``) for text written as it is."""

    def compress(self, data: bytes | np.ndarray) -> bytes | np.ndarray:
        return data

    def flush(self) -> bytes:
        return b""


def _gzip_compressor(compresslevel: int):
    """A streaming gzip compressor (``compress``/``flush``) at ``compresslevel`` (0-9)."""
    if _isal_zlib is None or compresslevel == 0:
        return zlib.compressobj(compresslevel, zlib.DEFLATED, _GZIP_WBITS)
    isal_level = (compresslevel + 1) // 3
    return _isal_zlib.compressobj(isal_level, _isal_zlib.DEFLATED, _GZIP_WBITS)


@numba.njit(cache=True, nogil=True)
def _format_rows(indptr, indices, data, name_bytes, name_offsets, start, stop, n_values, sep, out):
    """Write the text rows of columns ``start:stop`` of a CSC matrix into ``out``; return the
    bytes written.

    Each row is the column's name (a gene of a genes x cells file), then ``sep`` and the value
    for each of its ``n_values`` rows (``0`` where the column stores nothing), then ``\\n``.
    ``out`` must hold the block (see the bound in the caller).
    """
    newline, zero, minus = 10, 48, 45
    digits = np.empty(_MAX_DIGITS, dtype=np.uint8)
    pos = 0
    for gene in range(start, stop):
        for k in range(name_offsets[gene], name_offsets[gene + 1]):
            out[pos] = name_bytes[k]
            pos += 1
        j = indptr[gene]
        end = indptr[gene + 1]
        next_cell = indices[j] if j < end else n_values
        for cell in range(n_values):
            out[pos] = sep
            pos += 1
            if cell != next_cell:
                out[pos] = zero
                pos += 1
                continue
            value = data[j]
            j += 1
            next_cell = indices[j] if j < end else n_values
            if value < 0:
                out[pos] = minus
                pos += 1
                # -(value + 1) + 1 in unsigned arithmetic: exact even for the int64 minimum.
                magnitude = np.uint64(-(value + 1)) + np.uint64(1)
            else:
                magnitude = np.uint64(value)
            n_digits = 0
            while True:
                digits[n_digits] = zero + np.uint8(magnitude % np.uint64(10))
                n_digits += 1
                magnitude //= np.uint64(10)
                if magnitude == 0:
                    break
            for k in range(n_digits - 1, -1, -1):
                out[pos] = digits[k]
                pos += 1
        out[pos] = newline
        pos += 1
    return pos
