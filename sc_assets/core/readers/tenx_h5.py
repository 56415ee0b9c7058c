"""Cell Ranger HDF5 count matrices (``filtered_feature_bc_matrix.h5``), all versions.

Cell Ranger >= 3 keeps one ``/matrix`` group (``barcodes``, ``data``, ``indices``,
``indptr``, ``shape`` and a ``features`` group with ``id``, ``name``, ``feature_type``,
``genome``); Cell Ranger 1-2 keep one root group per genome, with ``genes`` (ids) and
``gene_names`` instead of ``features``. Both store a genes x cells CSC matrix, which is the
cells x genes CSR of the contract: its arrays are read straight into the contract's dtypes, in
parallel, by :mod:`._hdf5` (:mod:`._hdf5_datasets` says why it inflates the chunks itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sc_assets.core.errors import CountMatrixError
from sc_assets.core.readers._contract import (
    GENE_EXPRESSION,
    CountData,
    Features,
    canonical_csr,
)
from sc_assets.core.readers._hdf5 import checked_csr, open_hdf5, read_sparse_arrays
from sc_assets.core.readers._hdf5_datasets import reading_pool
from sc_assets.core.readers._source import HDF5_MAGIC, ReadOptions, Source

__all__ = ["LAYOUTS", "detect", "read", "read_gene_names"]

LAYOUTS = ("10x_h5",)

_MATRIX = ("barcodes", "data", "indices", "indptr", "shape")
_FEATURES = ("id", "name", "feature_type")
_LEGACY = (*_MATRIX, "genes", "gene_names")


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
        stored = group["shape"][()]
        if stored.shape != (2,) or stored.min() < 0:
            raise CountMatrixError(path, f"{group.name}/shape is {stored.tolist()}, not 2 sizes")
        n_features, n_cells = (int(n) for n in stored)
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
        shape = (n_cells, n_features)
        with reading_pool() as pool:
            # No copy of a matrix whose columns are subset next (counts_adata copies the subset).
            arrays = read_sparse_arrays(path, group, shape, describe, pool, copy=keep is None)
            X, X_copy = checked_csr(
                path,
                arrays,
                shape,
                describe,
                pool,
                entries_of=lambda cell, gene: _entries(group, arrays.indptr, cell, gene),
            )
    notes: dict[str, Any] = {}
    if keep is not None:  # Cell Ranger >= 3 with several genomes: the one asked for
        X = canonical_csr(X[:, keep])
        features = _subset(features, keep)
        notes["genome"] = options.genome
    return CountData(
        path=path,
        layout=source.layout,
        barcodes=barcodes,
        features=features,
        X=X,
        X_copy=X_copy,
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


def _entries(group: h5py.Group, indptr: np.ndarray, cell: int, gene: int) -> list[int]:
    """The positions in the file of ``gene``'s counts in ``cell`` (for an error message)."""
    start, stop = int(indptr[cell]), int(indptr[cell + 1])
    return (start + np.flatnonzero(group["indices"][start:stop] == gene)).tolist()
