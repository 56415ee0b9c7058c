"""AnnData ``.h5ad`` files: the raw counts from a layer, ``raw`` or ``X``.

Collaborators' files hold the raw counts in different places. Looked for in this order:

1. the layer the samplesheet names (``counts_layer``), strictly: it must hold counts;
2. ``layers["counts"]``, strictly too;
3. ``raw`` (``raw/X`` with the genes of ``raw/var``) when every stored value is a
   non-negative whole number;
4. ``X`` on the same condition.

Nothing else found: an error that says what each place holds. Only the chosen matrix, ``obs``
and ``var`` are read, with h5py and anndata's element reader, never the whole file (which may
hold big layers, ``obsm`` or ``obsp``). A sparse matrix is read by the same parallel code as a
Cell Ranger file (:mod:`._hdf5`), ``obs`` and ``var`` on the pool's threads meanwhile; a CSC
matrix is converted to CSR; a dense one is converted to CSR by blocks of rows. The file's own
``obs`` columns are kept.

A full-size sample (9,000 cells x 33,538 genes, 15.4 M values, X and ``layers["counts"]``
CSR float32 as anndata writes them) reads in 0.20-0.34 s (median 0.28) where
``anndata.read_h5ad``, which checks nothing and takes no QC sums, takes 0.19-0.57 s (median
0.30): fresh processes, interleaved, on 2 cores shared with other work. It needs both cores
(0.40 s of CPU to anndata's 0.30 s): with one, anndata is faster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import read_elem

from sc_assets.core.errors import CountMatrixError
from sc_assets.core.readers._contract import GENE_EXPRESSION, CountData, Features
from sc_assets.core.readers._hdf5 import (
    Describe,
    SparseArrays,
    checked_csr,
    count_problem,
    count_text,
    first_problem,
    is_count,
    open_hdf5,
    read_sparse_arrays,
)
from sc_assets.core.readers._hdf5_datasets import ValueRange, reading_pool, submit
from sc_assets.core.readers._source import HDF5_MAGIC, ReadOptions, Source

__all__ = ["LAYOUTS", "detect", "read", "read_gene_names"]

LAYOUTS = ("h5ad",)

_SPARSE = ("csr_matrix", "csc_matrix")
#: Values per block of a dense matrix (rows of it), read and converted at a time.
_DENSE_BLOCK = 1 << 20


def detect(path: Path, head: bytes) -> Source | None:
    """An AnnData file: the root says ``encoding-type: anndata``, or holds obs, var and X."""
    if not head.startswith(HDF5_MAGIC) or path.is_dir():
        return None
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("encoding-type") != "anndata" and not {"obs", "var", "X"} <= set(f):
                return None
            detail = f"an AnnData file ({_summary(f)})"
    except (OSError, KeyError, ValueError):  # unreadable: describe_input says so
        return None
    return Source("h5ad", path, {"matrix": path}, detail)


def read(source: Source, options: ReadOptions) -> CountData:
    """The raw counts of an ``.h5ad`` (see the module doc), its barcodes, genes and obs."""
    path = source.files["matrix"]
    with open_hdf5(path) as f, reading_pool() as pool:
        _check_format(f, path)
        looked: list[str] = []
        for candidate in _candidates(f, path, options):
            if candidate.matrix is None:
                looked.append(candidate.absent)
                continue
            tables = _Tables(f, candidate.var, pool)
            shape = (_length(f["obs"]), _length(candidate.var))
            loaded = _load(path, candidate, shape, tables, pool)
            if isinstance(loaded, str):
                looked.append(f"{candidate.label} {loaded}")
                continue
            X, X_copy = loaded
            return CountData(
                path=path,
                layout=source.layout,
                barcodes=[str(name) for name in tables.obs.index],
                features=tables.features,
                X=X,
                X_copy=X_copy,
                annotations=tables.obs,
                notes={"counts_from": candidate.label},
            )
    raise _no_counts(path, looked)


def read_gene_names(source: Source, options: ReadOptions) -> list[str]:
    """The genes of the matrix :func:`read` would take (``var`` or ``raw/var``), in order.

    Only ``var`` is read, and for ``raw`` and ``X``, which count only if they hold counts,
    their stored values a block at a time.
    """
    path = source.files["matrix"]
    looked: list[str] = []
    with open_hdf5(path) as f:
        _check_format(f, path)
        for candidate in _candidates(f, path, options):
            if candidate.matrix is None:
                looked.append(candidate.absent)
                continue
            if not candidate.strict and (problem := _stored_values_problem(candidate.matrix)):
                looked.append(f"{candidate.label} {problem}")
                continue
            features = _features(candidate.var)
            if features.types is None:
                return features.names
            pairs = zip(features.names, features.types, strict=True)
            return [name for name, kind in pairs if kind == GENE_EXPRESSION]
    raise _no_counts(path, looked)


# --- where the counts are -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    label: str
    """As messages and ``uns["sc_assets"]["counts_from"]`` name it, e.g. ``layers['counts']``."""
    matrix: h5py.Group | h5py.Dataset | None
    """None when absent."""
    var: h5py.Group
    strict: bool
    """Whether it must hold counts (named, or ``layers["counts"]``), or is only tried."""
    note: str = ""
    """Said after ``absent``, e.g. the layers there are."""

    @property
    def absent(self) -> str:
        return f"{self.label} absent{self.note}"


def _candidates(f: h5py.File, path: Path, options: ReadOptions) -> Iterator[_Candidate]:
    layers = f.get("layers")
    names = sorted(layers) if isinstance(layers, h5py.Group) else []
    raw = f.get("raw")
    raw_x = raw.get("X") if isinstance(raw, h5py.Group) and "var" in raw else None
    if options.counts_layer is not None:
        name = options.counts_layer
        if name in names:
            yield _Candidate(f"layers[{name!r}]", layers[name], f["var"], True)
        elif name == "X" and "X" in f:
            yield _Candidate("X", f["X"], f["var"], True)
        elif name == "raw" and raw_x is not None:
            yield _Candidate("raw", raw_x, raw["var"], True)
        else:
            found = f"its layers are {', '.join(names)}" if names else "it has no layers"
            problem = f"has no layer {name!r} (the samplesheet's counts_layer): {found}"
            raise CountMatrixError(path, problem)
        return
    if "counts" in names:
        yield _Candidate("layers['counts']", layers["counts"], f["var"], True)
        return
    note = f" (layers: {', '.join(names)})" if names else ""
    yield _Candidate("layers['counts']", None, f["var"], False, note)
    yield _Candidate("raw", raw_x, raw["var"] if raw_x is not None else f["var"], False)
    yield _Candidate("X", f.get("X"), f["var"], False)


def _no_counts(path: Path, looked: list[str]) -> CountMatrixError:
    problem = (
        f"no raw counts found: {'; '.join(looked)}: name the layer with raw counts in the "
        "samplesheet's counts_layer column"
    )
    return CountMatrixError(path, problem)


def _stored_values_problem(matrix: h5py.Group | h5py.Dataset) -> str | None:
    """What keeps ``matrix``'s stored values from being counts, reading a block at a time
    (with numpy: reading gene names never loads numba)."""
    encoding = _encoding(matrix)
    if encoding not in (*_SPARSE, "array"):
        return f"is stored as {encoding}, not a matrix"
    values = matrix["data"] if encoding in _SPARSE else matrix
    rows = max(1, _DENSE_BLOCK // max(1, int(np.prod(values.shape[1:]))))
    for start in range(0, values.shape[0], rows):
        if not is_count(values[start : start + rows]).all():
            return _holds(values)
    return None


def _holds(values: h5py.Dataset) -> str:
    """``holds non-integers (e.g. 0.4271)``: what the first value that is no count shows."""
    _, value = first_problem(values, lambda v: ~is_count(v))
    if not math.isfinite(value):
        return f"holds values that are not numbers of counts (e.g. {value})"
    if value != round(value):
        return f"holds non-integers (e.g. {count_text(value)})"
    return f"holds negative values (e.g. {count_text(value)})"


# --- reading one matrix -------------------------------------------------------------------------


class _Tables:
    """``obs`` and the matrix's ``var``, read on the pool's threads once started, while this
    one reads the matrix: started after the matrix's storage is known (HDF5 runs one call at a
    time), or when first needed."""

    def __init__(self, f: h5py.File, var: h5py.Group, pool: ThreadPoolExecutor | None) -> None:
        self._f, self._var, self._pool = f, var, pool
        self._read: tuple[Future, Future] | None = None

    def start(self) -> None:
        if self._read is None:
            obs = submit(self._pool, read_elem, self._f["obs"])
            self._read = (obs, submit(self._pool, _features, self._var))

    @property
    def obs(self) -> pd.DataFrame:
        self.start()
        return self._read[0].result()

    @property
    def features(self) -> Features:
        self.start()
        return self._read[1].result()


def _load(
    path: Path,
    candidate: _Candidate,
    shape: tuple[int, int],
    tables: _Tables,
    pool: ThreadPoolExecutor | None,
) -> tuple[sp.csr_matrix, sp.csr_matrix | None] | str:
    """``candidate``'s matrix of ``shape`` (cells, genes) as the contract's CSR and its copy
    (None if there is none yet); or, for a matrix only tried, what it holds instead of counts."""
    matrix, label = candidate.matrix, candidate.label
    encoding = _encoding(matrix)
    if encoding not in (*_SPARSE, "array"):
        if candidate.strict:
            raise CountMatrixError(path, f"{label} is stored as {encoding}, not a matrix")
        return f"is stored as {encoding}, not a matrix"
    stored = tuple(int(n) for n in (matrix.attrs["shape"] if encoding in _SPARSE else matrix.shape))
    if stored != shape:
        problem = (
            f"{label} is {_size(stored)}, but obs and var list {shape[0]:,} cells and "
            f"{shape[1]:,} genes"
        )
        raise CountMatrixError(path, problem)
    describe = _describe(tables)
    try:
        arrays, entries_of = _arrays(
            path, matrix, encoding, shape, describe, pool, candidate.strict, tables.start
        )
        if not arrays.values.counts:  # only for a matrix tried (else the read raised)
            return _holds(matrix["data"] if encoding in _SPARSE else matrix)
        return checked_csr(path, arrays, shape, describe, pool, entries_of=entries_of)
    except CountMatrixError as error:  # say which matrix
        raise CountMatrixError(path, f"{label}, {error.problem}") from None


def _arrays(
    path: Path,
    matrix: h5py.Group | h5py.Dataset,
    encoding: str,
    shape: tuple[int, int],
    describe: Describe,
    pool: ThreadPoolExecutor | None,
    strict: bool,
    alongside: Callable[[], object],
) -> tuple[SparseArrays, Callable[[int, int], list[int]] | None]:
    """The CSR arrays of ``matrix`` and, for a CSR one, where a cell's gene is in the file;
    ``alongside()`` is called once the matrix's storage is known (see read_sparse_arrays)."""
    if encoding == "csr_matrix":
        arrays = read_sparse_arrays(
            path,
            matrix,
            shape,
            describe,
            pool,
            check_counts=strict,
            copy=True,
            alongside=alongside,
        )
        indices = matrix["indices"]

        def entries_of(cell: int, gene: int) -> list[int]:
            start, stop = int(arrays.indptr[cell]), int(arrays.indptr[cell + 1])
            return (start + np.flatnonzero(indices[start:stop] == gene)).tolist()

        return arrays, entries_of
    if encoding == "csc_matrix":

        def by_gene(gene: int, cell: int | None) -> str:
            return describe(cell, gene)

        # No name holds the CSC arrays after the conversion: they are freed before the copy.
        csc = read_sparse_arrays(
            path, matrix, shape[::-1], by_gene, pool, check_counts=strict, alongside=alongside
        )
        return _transposed(csc, shape), None
    alongside()
    return _dense_to_csr(path, matrix, describe, strict), None


def _describe(tables: _Tables) -> Describe:
    """Names an entry, e.g. ``cell AAAC-1, gene CD3E`` (waiting for obs and var to be read)."""

    def describe(cell: int | None, gene: int | None) -> str:
        where = [] if cell is None else [f"cell {tables.obs.index[cell]}"]
        if gene is not None:
            where.append(f"gene {tables.features.names[gene]}")
        return ", ".join(where)

    return describe


def _length(table: h5py.Group) -> int:
    """The rows of an anndata dataframe (obs or var), from its index without reading it."""
    index = table[table.attrs.get("_index", "_index")]
    return index.shape[0] if isinstance(index, h5py.Dataset) else len(read_elem(index))


def _transposed(by_gene: SparseArrays, shape: tuple[int, int]) -> SparseArrays:
    """The CSR arrays of a CSC matrix (scipy leaves the genes of each cell in order)."""
    csc = sp.csc_matrix((by_gene.data, by_gene.indices, by_gene.indptr), shape=shape, copy=False)
    X = csc.tocsr()
    return SparseArrays(X.data, X.indices, X.indptr, by_gene.values)


def _dense_to_csr(
    path: Path, matrix: h5py.Dataset, describe: Describe, strict: bool
) -> SparseArrays:
    """A dense matrix as CSR arrays, converted a block of rows at a time.

    For a matrix only tried, the first block that is no counts ends the reading: the arrays
    returned are then empty and their value range says so.
    """
    n_rows, n_cols = matrix.shape
    rows = max(1, _DENSE_BLOCK // max(1, n_cols))
    found = ValueRange(0, 0, True)
    data, indices, row_nnz = [np.zeros(0, np.float32)], [np.zeros(0, np.int32)], [np.zeros(0)]
    for start in range(0, n_rows, rows):
        block = matrix[start : start + rows]
        found = found | ValueRange.of(block)
        if not found.counts:
            if not strict:
                return SparseArrays(data[0], indices[0], np.zeros(1, np.int32), found)
            at, value = first_problem(matrix, lambda v: ~is_count(v))
            raise CountMatrixError(path, f"{describe(*divmod(at, n_cols))}: {count_problem(value)}")
        row, col = np.nonzero(block)
        data.append(block[row, col].astype(np.float32))
        indices.append(col.astype(np.int32))
        row_nnz.append(np.bincount(row, minlength=block.shape[0]))
    counts = np.concatenate(row_nnz)
    index_dtype = np.int32 if counts.sum() < 2**31 else np.int64
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(index_dtype)
    return SparseArrays(
        np.concatenate(data), np.concatenate(indices).astype(index_dtype), indptr, found
    )


# --- the rest of the file -----------------------------------------------------------------------


def _check_format(f: h5py.File, path: Path) -> None:
    for element in ("obs", "var"):
        if element not in f:
            raise CountMatrixError(path, f"has no {element}: not an AnnData file")
        if not isinstance(f[element], h5py.Group):
            problem = (
                f"was written by anndata before 0.7 ({element} is a table, not a group): "
                "read it with anndata.read_h5ad and write it again"
            )
            raise CountMatrixError(path, problem)


def _features(var: h5py.Group) -> Features:
    """``var``'s index (gene names), and its gene_ids, feature_types and genome columns."""
    index = var.attrs.get("_index", "_index")
    columns: dict[str, list[str] | None] = {}
    for column in ("gene_ids", "feature_types", "genome"):
        columns[column] = _texts(read_elem(var[column])) if column in var else None
    return Features(
        names=_texts(read_elem(var[index])),
        ids=columns["gene_ids"],
        types=columns["feature_types"],
        genomes=columns["genome"],
    )


def _texts(values: Any) -> list[str]:
    """A column as anndata reads it (strings, or a categorical) as a list of ``str``."""
    if isinstance(values, pd.Categorical):  # one object per category, shared
        categories = [str(c) for c in values.categories] + ["nan"]
        return [categories[code] for code in values.codes.tolist()]  # code -1: missing
    values = np.asarray(values, dtype=object).tolist()
    return values if all(type(v) is str for v in values) else [str(v) for v in values]


def _encoding(matrix: h5py.Group | h5py.Dataset) -> str:
    if isinstance(matrix, h5py.Dataset):
        return "array" if matrix.ndim == 2 else f"a {matrix.ndim}-d array"
    return str(matrix.attrs.get("encoding-type", "a group of unknown encoding"))


def _size(shape: tuple[int, ...]) -> str:
    return " x ".join(f"{n:,}" for n in shape)


def _summary(f: h5py.File) -> str:
    """E.g. ``X: csr_matrix 9,000 x 33,538; layers: counts; raw``, for the detected detail."""
    parts = []
    if isinstance(x := f.get("X"), h5py.Group | h5py.Dataset):
        encoding = _encoding(x)
        shape = x.attrs.get("shape", None) if isinstance(x, h5py.Group) else x.shape
        parts.append(f"X: {encoding}" + (f" {_size(tuple(shape))}" if shape is not None else ""))
    if isinstance(layers := f.get("layers"), h5py.Group) and len(layers):
        parts.append(f"layers: {', '.join(sorted(layers))}")
    if "raw" in f:
        parts.append("raw")
    return "; ".join(parts) or "no matrix"
