"""Write ``.h5ad`` files with one copy of the raw counts; look inside them cheaply."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import anndata as ad
import h5py
import numpy as np
import scipy.sparse as sp
from anndata.io import read_elem

from sc_assets.core.readers._contract import PROTEIN_KEY


def write_h5ad(
    adata: ad.AnnData, path: str | os.PathLike[str], *, compression: str | None = None
) -> list[str]:
    """``adata.write_h5ad(path, compression=...)``, storing a layer equal to ``X`` only once.

    Such a layer (``layers["counts"]`` of a freshly read sample: the raw counts, like ``X``)
    becomes an HDF5 hard link to ``X``'s group: the file holds the matrix once, half the
    bytes to write and store, and anndata still reads ``X`` and the layer as two independent
    matrices (h5py follows links transparently). The one difference to keep in mind: in a
    file opened for writing (``backed="r+"``, or h5py), writing into ``X`` changes the layer.

    Returns the names of the linked layers.
    """
    linked = [name for name, layer in adata.layers.items() if matrices_equal(adata.X, layer)]
    layers = dict(adata.layers)
    for name in linked:  # written as links below; put back, in order, whatever happens
        del adata.layers[name]
    try:
        adata.write_h5ad(path, compression=compression)
    finally:
        for name, layer in layers.items():
            adata.layers.pop(name, None)
            adata.layers[name] = layer
    if linked:
        with h5py.File(path, "r+") as f:
            for name in linked:
                f["layers"][name] = f["X"]
    return linked


def estimated_h5ad_bytes(adata: ad.AnnData) -> int:
    """About the size of ``write_h5ad(adata, path)`` uncompressed: the matrices' arrays (a layer
    equal to ``X`` is a link, free), obs, var and obsm (their numbers and strings)."""
    total = _matrix_bytes(adata.X)
    for layer in adata.layers.values():
        if layer is not adata.X and not matrices_equal(adata.X, layer):
            total += _matrix_bytes(layer)
    frames = [adata.obs, adata.var, *(v for v in adata.obsm.values() if hasattr(v, "columns"))]
    for frame in frames:
        total += int(frame.memory_usage(index=True, deep=True).sum())
    return total


def _matrix_bytes(m: Any) -> int:
    if sp.issparse(m):
        return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
    return int(np.asarray(m).nbytes)


def matrices_equal(a: Any, b: Any) -> bool:
    """Whether two matrices (dense or sparse, any format) hold the same values."""
    if a.shape != b.shape:
        return False
    if sp.issparse(a) and sp.issparse(b):
        if a.format == b.format == "csr" and a.has_canonical_format and b.has_canonical_format:
            # Same structure, same values: three array comparisons, no sparse temporaries.
            return (
                np.array_equal(a.indptr, b.indptr)
                and np.array_equal(a.indices, b.indices)
                # equal_nan takes 10x longer: only when the plain comparison fails
                and (
                    np.array_equal(a.data, b.data) or np.array_equal(a.data, b.data, equal_nan=True)
                )
            )
        return (a != b).nnz == 0
    return bool(np.array_equal(_dense(a), _dense(b)))


def _dense(m: Any) -> np.ndarray:
    return m.toarray() if sp.issparse(m) else np.asarray(m)


@dataclass(frozen=True)
class H5adLayout:
    """The parts of an ``.h5ad`` the checks need: gene names, how ``X`` is stored, the panel."""

    var_names: list[str]
    x_encoding: str
    """anndata's encoding type of ``X``, e.g. ``"csr_matrix"``, ``"csc_matrix"``, ``"array"``."""
    protein_panel: list[str] | None = None
    """The antibodies of ``obsm["protein_expression"]`` (its columns, in order), or None when
    the file has no such data frame."""


def read_h5ad_layout(path: str | os.PathLike[str]) -> H5adLayout:
    """Read ``var`` names, ``X``'s encoding and the antibody panel, without any matrix.

    A few hundred kB whatever the matrix size: the panel comes from the protein data frame's
    column-order attribute, none of its values are read.
    """
    with h5py.File(path, "r") as f:
        # The index alone: var's other columns (QC sums, ids) are read by no check.
        names = read_elem(f["var"][f["var"].attrs["_index"]])
        encoding = f["X"].attrs.get("encoding-type", "array")
        protein = f.get(f"obsm/{PROTEIN_KEY}")
        panel = None
        if protein is not None and protein.attrs.get("encoding-type") == "dataframe":
            panel = [str(name) for name in protein.attrs["column-order"]]
    return H5adLayout(
        var_names=[str(name) for name in names], x_encoding=str(encoding), protein_panel=panel
    )
