"""The one AnnData every reader returns, assembled from what the reader found.

A reader module knows its layout and nothing else: it returns :class:`CountData` (barcodes,
features, a cells x features CSR matrix, and whatever annotations the input carries), and
:func:`counts_adata` turns that into the platform's contract, the same for every layout:

* ``X`` and ``layers["counts"]``: the raw counts of the Gene Expression features, cells x
  genes, CSR with float32 data and int32 indices, two independent matrices;
* ``obs_names`` the barcodes (unique), ``var_names`` the gene symbols made unique the anndata
  way; ``var["gene_ids"]``, ``var["feature_types"]`` and ``var["genome"]`` when the input has
  them; ``var["mt"]`` and scanpy's QC columns in ``obs`` and ``var``;
* Antibody Capture features in ``obsm["protein_expression"]`` (a DataFrame whose columns are
  the antibody names, as scvi-tools expects); other feature types are dropped and named in
  ``uns["sc_assets"]["dropped_feature_types"]``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from sc_assets.core.errors import CountMatrixError
from sc_assets.core.genes import unique_gene_names
from sc_assets.core.qc import (
    COUNTS_LAYER,
    MT_PREFIX,
    OBS_QC_COLUMNS,
    CountSums,
    csr_sums,
    qc_metrics,
)
from sc_assets.core.samples import SampleSpec

GENE_EXPRESSION = "Gene Expression"
ANTIBODY_CAPTURE = "Antibody Capture"
PROTEIN_KEY = "protein_expression"
#: ``uns`` key of what the reader found out (layout, where the counts came from, dropped types).
UNS_KEY = "sc_assets"


@dataclass(frozen=True)
class Features:
    """The features (columns) of a count matrix, as the input lists them."""

    names: list[str]
    """Symbols (or whatever names the input gives), duplicates kept, in matrix order."""
    ids: list[str] | None = None
    """Stable ids (e.g. Ensembl ``ENSG...``), when the input has them."""
    types: list[str] | None = None
    """Feature types (``Gene Expression``, ``Antibody Capture``...), when the input has them."""
    genomes: list[str] | None = None
    """Genome of each feature, when the input has it (Cell Ranger >= 3 HDF5)."""


@dataclass
class CountData:
    """What a reader found in one input, before it becomes the platform's AnnData."""

    path: str | os.PathLike[str]
    """The input, for error messages."""
    layout: str
    """The layout's name, e.g. ``"10x_h5"``."""
    barcodes: list[str]
    features: Features
    X: sp.csr_matrix
    """Cells x features raw counts: canonical CSR (sorted indices, no duplicates)."""
    X_copy: sp.csr_matrix | None = None
    """An independent copy of ``X`` when the reader made one cheaply (else one is made)."""
    sums: CountSums | None = None
    """QC sums over ``X`` with ``MT-`` genes flagged, when the reader took them on the way."""
    annotations: pd.DataFrame | None = None
    """The input's own per-cell columns (an ``.h5ad``'s obs), in barcode order."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Facts worth keeping (e.g. ``counts_from``), stored in ``uns["sc_assets"]``."""


def counts_adata(data: CountData, spec: SampleSpec | None = None) -> ad.AnnData:
    """The platform's AnnData of ``data`` (see the module docstring), with ``spec``'s metadata.

    Raises
    ------
    CountMatrixError
        If barcodes and features do not match the matrix shape, a barcode repeats, or the input
        has no Gene Expression features.
    """
    path, X, features = data.path, data.X, data.features
    n_cells, n_features = X.shape
    if len(data.barcodes) != n_cells:
        problem = f"{len(data.barcodes):,} barcodes for a matrix of {n_cells:,} cells"
        raise CountMatrixError(path, problem)
    for what in ("names", "ids", "types", "genomes"):
        values = getattr(features, what)
        if values is not None and len(values) != n_features:
            problem = f"{len(values):,} feature {what} for a matrix of {n_features:,} features"
            raise CountMatrixError(path, problem)
    check_unique_barcodes(path, data.barcodes)

    uns: dict[str, Any] = {"layout": data.layout, **data.notes}
    obsm: dict[str, pd.DataFrame] = {}
    sums, X_copy = data.sums, data.X_copy
    gene_mask = None
    if features.types is not None and any(t != GENE_EXPRESSION for t in features.types):
        types = np.asarray(features.types, dtype=object)
        gene_mask = types == GENE_EXPRESSION
        if not gene_mask.any():
            found = ", ".join(sorted(set(features.types)))
            raise CountMatrixError(path, f"no Gene Expression features (found: {found})")
        protein = types == ANTIBODY_CAPTURE
        if protein.any():
            names = unique_gene_names(list(np.asarray(features.names, dtype=object)[protein]))
            values = X[:, np.flatnonzero(protein)].toarray()
            obsm[PROTEIN_KEY] = pd.DataFrame(
                values, index=pd.Index(data.barcodes, dtype=object), columns=names
            )
        dropped = pd.Series(types[~gene_mask & ~protein]).value_counts()
        if len(dropped):
            uns["dropped_feature_types"] = {str(k): int(v) for k, v in dropped.items()}
        X = canonical_csr(X[:, np.flatnonzero(gene_mask)])
        features = _subset(features, gene_mask)
        sums, X_copy = None, None

    flagged = np.fromiter((g.startswith(MT_PREFIX) for g in features.names), bool, X.shape[1])
    # The QC sums (and the counts copy, if the reader made none) on other threads, which
    # release the GIL, while this one builds the tables.
    with ThreadPoolExecutor(2, thread_name_prefix="sc-assets-counts") as pool:
        copying = pool.submit(X.copy) if X_copy is None else None
        summing = pool.submit(csr_sums, X, flagged) if sums is None else None
        genes = unique_gene_names(features.names)
        metadata = spec.obs_columns(n_cells) if spec is not None else {}
        obs_columns: dict[str, Any] = dict(metadata)
        if data.annotations is not None:
            for name, column in data.annotations.items():
                if name not in metadata and name not in OBS_QC_COLUMNS:
                    obs_columns[str(name)] = column.array  # values, not aligned on an index
        var_columns: dict[str, Any] = {}
        for column, values in (
            ("gene_ids", features.ids),
            ("feature_types", features.types),
            ("genome", features.genomes),
        ):
            if values is not None:
                var_columns[column] = np.asarray(values, dtype=object)
        var_columns["mt"] = flagged
        sums = sums if summing is None else summing.result()
        X_copy = X_copy if copying is None else copying.result()
    obs_qc, var_qc = qc_metrics(sums)
    obs = pd.DataFrame({**obs_columns, **obs_qc}, index=pd.Index(data.barcodes, dtype=object))
    var = pd.DataFrame({**var_columns, **var_qc}, index=pd.Index(genes, dtype=object))
    adata = ad.AnnData(X=X, obs=obs, var=var, obsm=obsm or None, uns={UNS_KEY: uns})
    adata.layers[COUNTS_LAYER] = X_copy
    return adata


def check_unique_barcodes(path: str | os.PathLike[str], barcodes: list[str]) -> None:
    """Raise :class:`CountMatrixError` naming the first repeated barcode and its positions."""
    if len(set(barcodes)) == len(barcodes):
        return
    seen: dict[str, int] = {}
    for i, barcode in enumerate(barcodes, start=1):
        first = seen.setdefault(barcode, i)
        if first != i:
            problem = (
                f"barcode {barcode!r} appears twice (cells {first:,} and {i:,}): "
                "barcodes must be unique"
            )
            raise CountMatrixError(path, problem)


def canonical_csr(X: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """``X`` as the contract's CSR: float32 data, int32 indices, sorted, duplicates summed."""
    X = sp.csr_matrix(X)
    if not X.has_canonical_format:
        X.sum_duplicates()
    index_dtype = np.int32 if X.nnz < 2**31 else np.int64
    out = sp.csr_matrix(
        (
            X.data.astype(np.float32, copy=False),
            X.indices.astype(index_dtype, copy=False),
            X.indptr.astype(index_dtype, copy=False),
        ),
        shape=X.shape,
    )
    out.has_sorted_indices = True
    out.has_canonical_format = True
    return out


def _subset(features: Features, mask: np.ndarray) -> Features:
    def pick(values: list[str] | None) -> list[str] | None:
        return None if values is None else [v for v, keep in zip(values, mask, strict=True) if keep]

    return Features(
        names=pick(features.names),
        ids=pick(features.ids),
        types=pick(features.types),
        genomes=pick(features.genomes),
    )
