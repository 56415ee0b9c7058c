"""Look inside an ``.h5ad`` file without loading its matrices."""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
from anndata.io import read_elem


@dataclass(frozen=True)
class H5adLayout:
    """The parts of an ``.h5ad`` the checks need: gene names and how ``X`` is stored."""

    var_names: list[str]
    x_encoding: str
    """anndata's encoding type of ``X``, e.g. ``"csr_matrix"``, ``"csc_matrix"``, ``"array"``."""


def read_h5ad_layout(path: str | os.PathLike[str]) -> H5adLayout:
    """Read ``var`` names and ``X``'s encoding (a few hundred kB, whatever the matrix size)."""
    with h5py.File(path, "r") as f:
        var = read_elem(f["var"])
        encoding = f["X"].attrs.get("encoding-type", "array")
    return H5adLayout(var_names=[str(name) for name in var.index], x_encoding=str(encoding))
