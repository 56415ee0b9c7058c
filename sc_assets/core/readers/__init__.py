"""Read a sample's raw counts from any layout labs hold, detected by content.

One module per layout, each with the same three functions (``detect``, ``read``,
``read_gene_names``); :func:`read_count_matrix` picks the module by looking at the input (magic
bytes, HDF5 structure, folder contents, not the extension alone) and every module's result
goes through :func:`~sc_assets.core.readers._contract.counts_adata`, so all layouts give the
same AnnData.

========== ================================================================== ===========
layout     what                                                               module
========== ================================================================== ===========
csv, tsv   genes x cells (or cells x genes) text, gzipped or not (GEO's CSVs) ``text``
10x_h5     Cell Ranger >= 3 HDF5 (``/matrix``), or 1-2 (a group per genome)   ``tenx_h5``
10x_mtx    MTX folder v3 or v2, or a prefixed trio (``GSM..._matrix.mtx.gz``) ``mtx``
starsolo   STARsolo's ``Solo.out/Gene/filtered``                              ``mtx``
h5ad       AnnData: the counts from a layer, ``raw`` or ``X``                 ``h5ad``
========== ================================================================== ===========

Adding a layout is a new module and a line in :data:`_READERS`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import anndata as ad

from sc_assets.core.errors import CountMatrixError
from sc_assets.core.readers._contract import PROTEIN_KEY, UNS_KEY
from sc_assets.core.readers._source import (
    FORMATS,
    Reader,
    ReadOptions,
    Source,
    describe_input,
    format_matches,
    read_head,
)
from sc_assets.core.samples import SampleSpec, geo_spec

__all__ = [
    "FORMATS",
    "PROTEIN_KEY",
    "UNS_KEY",
    "ReadOptions",
    "Source",
    "detect_layout",
    "format_matches",
    "read_count_matrix",
    "read_gene_names",
    "read_sample",
    "warm_up",
]


def _readers() -> tuple[Reader, ...]:
    # Imported on first use: their imports (scipy.io, anndata.io, h5py) cost ~55 ms that
    # processes which never detect a layout (most Dagster runs) need not pay. None of them
    # loads numba until it reads a matrix.
    from sc_assets.core.readers import h5ad, mtx, tenx_h5, text

    # Order matters only where two could claim an input: HDF5 layouts are told apart by their
    # groups, and an MTX file is text, so MTX is asked before the plain-text reader.
    return (tenx_h5, h5ad, mtx, text)


def detect_layout(path: str | os.PathLike[str], format: str = "auto") -> Source:
    """The layout of ``path`` (a file or a folder) and the files it is read from.

    Parameters
    ----------
    path
        The input as a samplesheet or a user names it.
    format
        ``"auto"`` to detect, or a layout name from :data:`FORMATS` to insist on one.

    Raises
    ------
    CountMatrixError
        If ``path`` does not exist or is no supported layout (or not the one asked for): the
        message says what was found and lists the supported layouts.
    """
    path = Path(path)
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}: expected auto or one of {', '.join(FORMATS)}")
    if not path.exists():
        raise CountMatrixError(path, "no such file or folder")
    head = read_head(path)
    source = next(
        (found for reader in _readers() if (found := reader.detect(path, head)) is not None), None
    )
    if source is None:
        found = describe_input(path, head)
        problem = f"not a supported count matrix: found {found}; supported layouts: "
        raise CountMatrixError(path, problem + ", ".join(FORMATS))
    if not format_matches(format, source.layout):
        problem = f"the format is given as {format}, but this is {source.detail} ({source.layout})"
        raise CountMatrixError(path, problem)
    return source


def read_count_matrix(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    orientation: str = "genes_x_cells",
    counts_layer: str | None = None,
    genome: str | None = None,
) -> ad.AnnData:
    """Read any supported input as the platform's cells x genes AnnData of raw counts.

    Parameters
    ----------
    path
        A file or folder in one of the layouts of :data:`FORMATS`.
    format
        ``"auto"`` (detect by content) or a layout name.
    orientation
        For text matrices: ``"genes_x_cells"`` (a row per gene) or ``"cells_x_genes"``.
    counts_layer
        For ``.h5ad``: the layer with the raw counts (default: ``layers["counts"]``, else
        ``raw`` or ``X`` when they hold integers).
    genome
        For inputs with several genomes: the one to read.

    Returns
    -------
    AnnData with ``X`` a CSR float32 matrix of the raw counts (int32 indices),
    ``layers["counts"]`` an independent copy, ``obs_names`` the barcodes, ``var_names`` the
    gene symbols made unique, ``var["mt"]``, scanpy's QC columns, ``var["gene_ids"]`` and
    ``var["feature_types"]`` when the input has them, ``obsm["protein_expression"]`` for
    Antibody Capture features. A GEO-named file (``GSM<digits>_<Condition><donor>_count_
    matrix.csv.gz``) also gets its sample metadata from its name, as in round 1.

    Raises
    ------
    CountMatrixError
        If the input is no supported layout or is malformed: the message names the file and,
        where there is one, the line or entry.
    """
    options = ReadOptions(orientation=orientation, counts_layer=counts_layer, genome=genome)
    spec = None
    with contextlib.suppress(ValueError):  # not a GEO name: no metadata from the name
        spec = geo_spec(path)
    return _read(detect_layout(path, format), options, spec)


def read_sample(spec: SampleSpec) -> ad.AnnData:
    """Read the sample ``spec`` describes, with its metadata in ``obs`` (see read_count_matrix)."""
    return _read(detect_layout(spec.path, spec.format), ReadOptions.of(spec), spec)


def read_gene_names(spec: SampleSpec) -> list[str]:
    """The gene symbols of ``spec``'s input in matrix order, made unique, without the counts.

    What ``read_sample(spec).var_names`` will be, for pinning the reference gene list: only the
    features (and for text matrices the gene column) are read.
    """
    from sc_assets.core.genes import unique_gene_names

    source = detect_layout(spec.path, spec.format)
    return unique_gene_names(_reader(source).read_gene_names(source, ReadOptions.of(spec)))


def _read(source: Source, options: ReadOptions, spec: SampleSpec | None) -> ad.AnnData:
    from sc_assets.core.readers._contract import counts_adata

    return counts_adata(_reader(source).read(source, options), spec)


def _reader(source: Source) -> Reader:
    return next(reader for reader in _readers() if source.layout in reader.LAYOUTS)


def warm_up() -> None:
    """Load every reader's compiled code now, not in the first read.

    The ingest workers call it when they start: the CSV parser (``text.warm_up``), then the
    loops of the HDF5 and MTX readers and of the QC sums, by reading two tiny files.
    """
    import tempfile

    import scipy.sparse as sp

    from sc_assets.core.readers import text
    from sc_assets.core.tenx_writers import write_10x_h5, write_10x_mtx

    text.warm_up()
    X = sp.csr_matrix([[1, 0, 2], [0, 3, 0]])
    names = dict(
        barcodes=["A-1", "B-1"], gene_ids=["G1", "G2", "G3"], gene_names=["x", "y", "MT-z"]
    )
    with tempfile.TemporaryDirectory(prefix="sc-assets-warm-up-") as folder:
        write_10x_h5(os.path.join(folder, "m.h5"), X, **names)
        write_10x_mtx(os.path.join(folder, "mtx"), X, **names)
        for name in ("m.h5", "mtx"):
            read_count_matrix(os.path.join(folder, name))
