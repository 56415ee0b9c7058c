"""Merge per-sample ``.h5ad`` files into one, out of core, with ``anndata.concat`` semantics.

The result of :func:`merge_h5ad` equals, element by element, what this in-memory recipe gives::

    merged = ad.concat(
        [ad.read_h5ad(path) for _, path in sources],
        join="inner", merge="same", label="sample", keys=[label for label, _ in sources],
        index_unique=None,
    )
    merged.obs_names = [f"{label}-{barcode}" for label, barcode in ...]

but memory does not grow with the number of samples: the sparse matrices are copied in
fixed-size blocks straight from the source files into datasets laid out once with their final
size, and obs (and the ``obsm`` data frames, e.g. CITE-seq's ``protein_expression``) is
converted one sample at a time and appended a few samples at a time. Held at once: one sample's
obs, obsm frames and var, the merged var, one row per source and frame (the schemas), and 12
bytes per cell (a name hash for the duplicate check and a total for the median).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import read_elem, sparse_dataset, write_elem
from isal import isal_zlib

from sc_assets.core.qc import COUNTS_LAYER

#: The obs column that names each cell's source, a categorical of the labels in source order.
LABEL_COLUMN = "sample"

#: Stored values (non-zeros) copied per block. 4 Mi values are 16 MiB of float32 data plus
#: 16 MiB of int32 indices: large enough that per-call HDF5 overhead is negligible, small enough
#: that memory stays flat. A block always holds whole rows, so one row longer than this is
#: copied on its own.
BLOCK_NNZ = 1 << 22

#: Chunk size of the merged sparse datasets. Chunked beats contiguous even uncompressed
#: (contiguous took ~1.5x the kernel time in side-by-side runs); 1 MiB chunks fit the chunk
#: cache, so a chunk straddling two blocks is completed in memory, never read back; and reading
#: a few rows in backed mode decompresses at most a few MiB.
CHUNK_BYTES = 1 << 20

#: Rows of obs encoded and appended at once. anndata's encoding of a frame costs ~8 ms however
#: short it is, so a few samples are appended together; a batch is a few MB. Frames wider than
#: :data:`_BATCH_COLUMNS` columns (a protein panel of 200 antibodies) get proportionally fewer
#: rows per batch, so a batch stays below ~16 MB.
OBS_BATCH_ROWS = 1 << 15
_BATCH_COLUMNS = 64

#: How many duplicated obs names :class:`MergeSummary` lists.
DUPLICATE_EXAMPLES = 10

#: The sparse matrices that are merged: ``X`` and the raw-count layer.
_MATRICES = ("X", f"layers/{COUNTS_LAYER}")
_INT32_MAX = np.iinfo(np.int32).max

Compression = Literal[None, "lzf", "gzip"]


@dataclass(frozen=True)
class SampleSummary:
    """What one source contributed to the merged file."""

    label: str
    """The label given with the source: its category in ``obs["sample"]``, its name prefix."""
    path: str
    """The source file."""
    n_obs: int
    """Cells (rows) copied from this source."""
    nnz: int
    """Stored values of ``X`` copied from this source (after the inner join on genes)."""
    x_sum: float
    """Sum of those values, accumulated in float64 (exact for integer counts below 2**53)."""


@dataclass(frozen=True)
class MergeSummary:
    """Numbers of the merged file, for the checks of the merge.

    Totals are taken from what was written, independently of the per-sample rows: ``n_obs``
    is the length of the written obs, ``nnz`` and ``counts_nnz`` the last written ``indptr``
    values, sums and checksums accumulate over the written blocks. So these are real checks:

    * ``n_obs == sum(s.n_obs for s in samples)``: obs and the matrix rows agree;
    * ``(nnz, x_sum, x_checksum) == (counts_nnz, counts_sum, counts_checksum)``: the counts
      layer equals ``X`` (for the platform's raw-count ``X``);
    * ``obs_names_unique``.
    """

    samples: tuple[SampleSummary, ...]
    """One row per source, in merge order."""
    n_obs: int
    """Rows of the written obs (cells)."""
    n_vars: int
    """Columns of the merged matrices: the genes common to all sources."""
    nnz: int
    """Stored values of the merged ``X``."""
    x_sum: float
    """Sum of the merged ``X``: the samples' ``x_sum`` added in order, in float64."""
    x_checksum: str
    """CRC-32 of the bytes written for ``X``'s ``indptr``, ``indices`` and ``data`` (each
    dataset as one stream, native byte order) as 24 hex digits, 8 per dataset: independent of
    the block size, and reproducible from the file with ``zlib.crc32``."""
    counts_nnz: int
    """Stored values of the merged ``layers["counts"]``."""
    counts_sum: float
    """Sum of the merged ``layers["counts"]``, as ``x_sum``."""
    counts_checksum: str
    """As ``x_checksum``, for ``layers["counts"]``: equal to it when both matrices were
    written identically (values, structure and dtypes)."""
    median_total_counts: float
    """Median over cells of the row sums of ``X`` (row sums accumulated in ``X``'s dtype,
    float32 for counts: exact below 2**24 per cell; 0.0 without cells)."""
    n_duplicate_obs_names: int
    """``n_obs`` minus the number of distinct obs names (0 when they are unique)."""
    duplicate_obs_names: tuple[str, ...]
    """Up to :data:`DUPLICATE_EXAMPLES` names that occur more than once, in the order of their
    first occurrence."""

    @property
    def obs_names_unique(self) -> bool:
        """Whether every merged obs name occurs once."""
        return self.n_duplicate_obs_names == 0


def merge_h5ad(
    sources: Sequence[tuple[str, str | os.PathLike[str]]],
    out_path: str | os.PathLike[str],
    *,
    compression: Compression = None,
    block_nnz: int = BLOCK_NNZ,
) -> MergeSummary:
    """Concatenate per-sample ``.h5ad`` files along obs into ``out_path``, out of core.

    The written file equals ``ad.concat(adatas, join="inner", merge="same", label="sample",
    keys=labels, index_unique=None)`` with obs names replaced by ``f"{label}-{barcode}"``:

    * ``var``: the genes common to all sources, in the first source's order; the var columns
      whose values are equal in all sources (on those genes), e.g. ``mt``; per-sample QC
      columns are dropped.
    * ``obs``: the columns present in every source, with anndata's dtype unification
      (categoricals get the natural-sorted union of the categories), plus ``sample``, a
      categorical of the labels in source order (replacing a ``sample`` column of the sources).
    * ``X`` and ``layers["counts"]``: CSR, the sources' (promoted) dtype, index dtype int32
      unless the number of stored values or of genes needs int64.
    * ``obsm``: the keys whose element is a data frame in every source (CITE-seq's
      ``obsm["protein_expression"]``, one column per antibody), as ``ad.concat``'s inner join
      gives them: the columns common to all sources in the first source's order, dtypes
      promoted as pandas' concat does, the merged obs names as index. A key missing from some
      source is dropped, as are the sources' ``uns`` (e.g. ``uns["sc_assets"]``).
    * ``uns``, ``varm``, ``obsp``, ``varp``: empty, as ``ad.concat`` leaves them here.

    Sources whose genes equal the merged genes are copied verbatim; the others have their
    column indices remapped (genes not in all sources dropped, rows re-sorted by column, and
    explicit zeros dropped, as ``ad.concat``'s sparse reindexing does).

    Parameters
    ----------
    sources
        ``(label, path)`` pairs in merge order, e.g. ``("Ctrl1", ".../Ctrl1.h5ad")``. Each file
        must hold ``X`` and ``layers["counts"]`` as CSR matrices.
    out_path
        File to write (truncated if it exists). On error it is removed; the caller is expected
        to write to a temporary name and rename it into place.
    compression
        HDF5 filter of the sparse datasets (after the shuffle filter) and of obs/var: ``None``
        (fastest), ``"lzf"`` or ``"gzip"`` (smaller, several times slower).
    block_nnz
        Stored values copied per block; bounds the memory used for the matrices.

    Returns
    -------
    The numbers of the written file, see :class:`MergeSummary`.

    Raises
    ------
    FileNotFoundError
        If a source file does not exist.
    ValueError
        If ``sources`` is empty, a label repeats, a source is not an AnnData ``.h5ad`` file, has
        no ``layers["counts"]``, has a matrix that is not CSR or has non-unique gene names, if
        ``out_path`` is one of the sources, or if the sources hold elements that the recipe
        above would keep and this function does not merge (common ``obsm`` keys that are not
        data frames in every source, common ``varm``/``varp`` keys, other common layers,
        ``raw`` in every source), or if a source changes while it is merged.
    """
    if compression not in (None, "lzf", "gzip"):
        raise ValueError(f"compression must be None, 'lzf' or 'gzip', not {compression!r}")
    if block_nnz < 1:
        raise ValueError(f"block_nnz must be positive, not {block_nnz}")
    out_path = Path(out_path)
    plan = _plan(sources, out_path, block_nnz)
    try:
        # Two chunks per dataset in the cache, so a chunk always fits (see CHUNK_BYTES).
        with h5py.File(out_path, "w", rdcc_nbytes=2 * CHUNK_BYTES) as out:
            summary = _write(plan, out, compression, block_nnz)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    return summary


# ---------------------------------------------------------------------------------------------
# Planning: shapes, genes, var and the obs schema of every source, without reading matrices.
# ---------------------------------------------------------------------------------------------


@dataclass
class _Source:
    label: str
    path: Path
    n_obs: int
    nnz: dict[str, int]
    """Stored values per matrix that will be written (after the inner join on genes)."""
    identity: bool = True
    """The source's genes are exactly the merged genes, in order: its matrices are copied
    verbatim. Otherwise their column indices go through a gene map."""
    counts_is_x: bool = False
    """``layers["counts"]`` is a hard link to ``X`` (see :func:`sc_assets.core.h5ad.write_h5ad`)."""


@dataclass
class _Plan:
    sources: list[_Source]
    genes: pd.Index
    """The merged var names."""
    var: pd.DataFrame
    obs_schema: pd.DataFrame
    """One row per source carrying the merged obs columns, their order and dtypes."""
    obsm_schema: dict[str, pd.DataFrame]
    """The same for each merged obsm data frame, by key."""
    dtypes: dict[str, np.dtype]
    """Data dtype per matrix: the sources' dtypes promoted, as scipy's vstack does."""

    @property
    def counts_is_x(self) -> bool:
        """Every source's counts layer is its X: the merged one is too, written once."""
        return all(source.counts_is_x for source in self.sources)


def check_labels(sources: Sequence[tuple[str, object]]) -> None:
    """ValueError unless there are sources and their labels are unique."""
    if not sources:
        raise ValueError("no sources to merge")
    labels = [label for label, _ in sources]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise ValueError(f"duplicate source label {label!r}: labels must be unique")


def _plan(
    sources: Sequence[tuple[str, str | os.PathLike[str]]], out_path: Path, block_nnz: int
) -> _Plan:
    check_labels(sources)
    labels = [label for label, _ in sources]
    out_resolved = out_path.resolve()
    for label, path in sources:
        if Path(path).resolve() == out_resolved:
            raise ValueError(f"out_path {out_path} is the source {label!r} itself")

    planned: list[_Source] = []
    heads: list[pd.DataFrame] = []
    # obsm keys that are data frames in every source so far -> each source's representative rows
    frame_heads: dict[str, list[pd.DataFrame]] | None = None
    dtypes: dict[str, list[np.dtype]] = {key: [] for key in _MATRICES}
    common_keys: dict[str, set[str]] = {}
    all_raw = True
    genes = first_genes = pd.Index([])
    same_genes = True
    var_merge: _VarMerge | None = None
    for label, path in sources:
        path = Path(path)
        with _open_source(label, path) as f:
            n_obs, nnz, matrix_dtypes = _check_matrices(f, path)
            counts_is_x = f["X"] == f[_MATRICES[1]]  # the same HDF5 object (a hard link)
            var = _read_var(f["var"], None if var_merge is None else var_merge.columns)
            obs = _frame_columns(f["obs"], n_obs)
            frames = _obsm_frames(f, path, n_obs, None if frame_heads is None else set(frame_heads))
            for key in ("obsm", "varm", "varp", "layers"):
                keys = set(f[key]) if key in f else set()
                common_keys[key] = common_keys.get(key, keys) & keys
            all_raw = all_raw and "raw" in f
        if not var.index.is_unique:
            duplicated = var.index[var.index.duplicated()][0]
            raise ValueError(f"{path}: gene names are not unique, e.g. {duplicated!r}")
        for key in _MATRICES:
            dtypes[key].append(matrix_dtypes[key])
        if var_merge is None:
            genes = first_genes = var.index
            var_merge = _VarMerge(var)
        else:
            # ad.concat intersects the var names left to right, and pandas keeps the left
            # order: the merged genes are in the first source's order.
            genes = genes.intersection(var.index)
            same_genes = same_genes and var.index.equals(first_genes)
            if same_genes:
                # The normal case, all sources have the same genes: var is merged in this
                # same pass. Otherwise _join_genes redoes it on the final common genes.
                var_merge.add(var)
        heads.append(_representative_rows(obs))
        if frame_heads is None:
            frame_heads = {key: [frame] for key, frame in frames.items()}
        else:
            frame_heads = {
                key: [*previous, frames[key]]
                for key, previous in frame_heads.items()
                if key in frames
            }
        planned.append(_Source(label, path, n_obs, nnz, counts_is_x=counts_is_x))

    frame_heads = frame_heads or {}
    _refuse_unmerged(common_keys, all_raw, merged_obsm=set(frame_heads))
    obs_schema, obsm_schema = _schemas(heads, frame_heads, labels)
    return _Plan(
        sources=planned,
        genes=genes,
        var=var_merge.result(genes) if same_genes else _join_genes(planned, genes, block_nnz),
        obs_schema=obs_schema,
        obsm_schema=obsm_schema,
        dtypes={key: np.result_type(*dts) for key, dts in dtypes.items()},
    )


def _open_source(label: str, path: Path) -> h5py.File:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: source {label!r} does not exist")
    try:
        # Without a chunk cache HDF5 reads whole chunks straight into the caller's buffer
        # instead of through the cache (one copy less: ~1.5x faster block reads). Nothing is
        # read twice, so the cache would not help.
        return h5py.File(path, "r", rdcc_nbytes=0)
    except OSError as error:
        raise ValueError(f"{path}: source {label!r} is not an HDF5 (.h5ad) file: {error}") from None


def _check_matrices(f: h5py.File, path: Path) -> tuple[int, dict[str, int], dict[str, np.dtype]]:
    """``n_obs``, stored values and data dtype of each matrix; raise if it is not usable CSR."""
    for key in ("obs", "var"):
        if key not in f:
            raise ValueError(f"{path}: not an AnnData file, it has no {key!r}")
    n_obs_var = (_frame_length(f["obs"]), _frame_length(f["var"]))
    nnz, dtypes = {}, {}
    for key in _MATRICES:
        what = "X" if key == "X" else f"layers[{key.removeprefix('layers/')!r}]"
        if key not in f:
            raise ValueError(f"{path}: has no {what}")
        try:
            matrix = sparse_dataset(f[key])
        except (ValueError, TypeError):
            encoding = f[key].attrs.get("encoding-type", "not an AnnData element")
            raise ValueError(f"{path}: {what} is {encoding}, not a CSR sparse matrix") from None
        if matrix.format != "csr":
            raise ValueError(f"{path}: {what} is {matrix.format.upper()}, not CSR")
        if tuple(matrix.shape) != n_obs_var:
            raise ValueError(f"{path}: {what} has shape {matrix.shape}, obs x var is {n_obs_var}")
        group = f[key]
        n = group["data"].shape[0]
        indptr = group["indptr"]
        if (
            group["indices"].shape[0] != n
            or indptr.shape[0] != n_obs_var[0] + 1
            or int(indptr[0]) != 0
            or int(indptr[-1]) != n
        ):
            raise ValueError(f"{path}: {what} is not a consistent CSR matrix")
        nnz[key], dtypes[key] = n, matrix.dtype
    return n_obs_var[0], nnz, dtypes


def _frame_columns(group: h5py.Group, n_obs: int) -> pd.DataFrame:
    """A data frame (obs, an obsm frame) as ``read_elem`` reads it but without the index.

    Mirrors anndata's ``read_dataframe`` (each column is an element read by ``read_elem``)
    and saves reading ~9,000 strings per source: the merge replaces the index anyway.
    """
    columns = list(group.attrs["column-order"])
    return pd.DataFrame(
        {column: _read_column(group[column]) for column in columns},
        index=pd.RangeIndex(n_obs),
        columns=columns or None,
    )


def _read_var(group: h5py.Group, columns: list[str] | None) -> pd.DataFrame:
    """``read_elem(group)`` of a var frame, reading only ``columns`` (all when None).

    After the first source only the columns equal so far can still be merged: per-sample QC
    columns (``total_counts``, ``mean_counts``...) differ from the second source on and are
    not read again, ~30 ms per source of strings and floats for 33,538 genes.
    """
    if columns is None:
        return read_elem(group)
    index_key = group.attrs["_index"]
    index = pd.Index(read_elem(group[index_key]), name=None if index_key == "_index" else index_key)
    wanted = set(columns)
    present = [column for column in group.attrs["column-order"] if column in wanted]
    return pd.DataFrame({column: read_elem(group[column]) for column in present}, index=index)


def _read_column(element: h5py.Dataset | h5py.Group) -> object:
    """``read_elem(element)``, read straight from h5py for a plain numeric array.

    What read_elem returns for such a column, without its ~1 ms of spec lookup per element:
    10x less time for a protein panel of a hundred antibody columns.
    """
    if (
        isinstance(element, h5py.Dataset)
        and element.dtype.kind in "biuf"
        and element.attrs.get("encoding-type") == "array"
    ):
        return element[()]
    return read_elem(element)


def _obsm_frames(
    f: h5py.File, path: Path, n_obs: int, keys: set[str] | None
) -> dict[str, pd.DataFrame]:
    """Representative rows of the source's obsm data frames (of ``keys`` only, if given)."""
    frames: dict[str, pd.DataFrame] = {}
    for key, element in f["obsm"].items() if "obsm" in f else []:
        if keys is not None and key not in keys:
            continue
        if element.attrs.get("encoding-type") != "dataframe":
            continue
        if (n_rows := _frame_length(element)) != n_obs:
            raise ValueError(f"{path}: obsm[{key!r}] has {n_rows} rows, but obs has {n_obs}")
        frames[key] = _representative_rows(_frame_columns(element, n_obs))
    return frames


def _frame_length(group: h5py.Group) -> int:
    # A dataframe's length is its index's; reading the whole frame is left to read_elem.
    return group[group.attrs["_index"]].shape[0]


def _refuse_unmerged(
    common_keys: dict[str, set[str]], all_raw: bool, *, merged_obsm: set[str]
) -> None:
    """Refuse sources whose concat would keep elements this module does not merge.

    ad.concat keeps obsm keys (and varm/varp keys, when equal) common to all sources, every
    common layer, and raw when all sources have it. Of these, only obsm data frames
    (``merged_obsm``) and the counts layer are merged here; refusing the others keeps "equal
    to the recipe" true instead of silently dropping data.
    """
    common_keys["layers"].discard(COUNTS_LAYER)
    common_keys["obsm"] -= merged_obsm
    kept = [f"{key} {sorted(keys)}" for key, keys in common_keys.items() if keys]
    if all_raw:
        kept.append("raw")
    if kept:
        raise ValueError(
            "every source has elements that merge_h5ad does not merge: " + ", ".join(kept)
        )


class _VarMerge:
    """``merge="same"`` of ad.concat for var, fed one source's var at a time.

    ad.concat keeps the columns present in every source whose values (on the merged genes)
    are equal in all of them, with the first source's values, in the column order of the last
    source (its key intersection is ``MutableSet.__and__``, which keeps the right operand's
    order). Only the first var and the current one are held.
    """

    def __init__(self, first: pd.DataFrame) -> None:
        self._first = first
        self._columns = list(first.columns)

    @property
    def columns(self) -> list[str]:
        """The columns still equal in every source so far (the only ones worth reading)."""
        return list(self._columns)

    def add(self, var: pd.DataFrame) -> None:
        kept = set(self._columns)
        self._columns = [
            column
            for column in var.columns
            if column in kept and var[column].equals(self._first[column])
        ]

    def result(self, genes: pd.Index) -> pd.DataFrame:
        columns = {column: self._first[column] for column in self._columns}
        return pd.DataFrame(columns, index=genes)


def _representative_rows(obs: pd.DataFrame) -> pd.DataFrame:
    """One row whose columns stand for ``obs``'s columns in pandas' concat dtype rules.

    Those rules look at the dtypes (categoricals: their categories) and, for the deprecated
    special case, at whether a column is all missing: so each column's first non-missing value
    (or its first value when all are missing) is taken. An empty frame stays empty.
    """
    if len(obs) == 0:
        return obs
    columns = {}
    for column in obs.columns:
        position = int(obs[column].notna().to_numpy().argmax())
        columns[column] = obs[column].iloc[position : position + 1].reset_index(drop=True)
    return pd.DataFrame(columns, index=pd.RangeIndex(1))


def _schemas(
    heads: list[pd.DataFrame], frame_heads: dict[str, list[pd.DataFrame]], labels: list[str]
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The merged obs and obsm frames' columns and dtypes, decided by anndata itself.

    Running ad.concat on the representative rows (one per source, none for an empty source)
    applies exactly its rules (inner join of the columns, unification of categoricals and
    booleans, pandas' dtype promotion, the label column) without holding more than one row
    per source.
    """
    adatas = []
    for i, head in enumerate(heads):
        names = pd.Index([f"{i}:{j}" for j in range(len(head))], dtype=object)
        obsm = {key: frames[i].set_axis(names) for key, frames in frame_heads.items()}
        adatas.append(ad.AnnData(obs=head.set_axis(names), obsm=obsm))
    merged = ad.concat(adatas, join="inner", label=LABEL_COLUMN, keys=labels, index_unique=None)
    return merged.obs, {key: merged.obsm[key] for key in frame_heads}


def _join_genes(sources: list[_Source], genes: pd.Index, block_nnz: int) -> pd.DataFrame:
    """Second planning pass when the gene sets differ: merged var on ``genes``, output sizes.

    Sources whose genes are not exactly the merged ones lose the values of dropped genes (and,
    as ad.concat's reindexing by sparse matrix product does, explicit zeros), so their output
    size is counted here, before the datasets are laid out.
    """
    var_merge: _VarMerge | None = None
    for source in sources:
        with _open_source(source.label, source.path) as f:
            var = read_elem(f["var"])
            source.identity = var.index.equals(genes)
            if not source.identity:
                gene_map = genes.get_indexer(var.index)
                for key in _MATRICES:
                    source.nnz[key] = _count_joined(f[key], gene_map, block_nnz)
                var = var.reindex(genes)
        if var_merge is None:
            var_merge = _VarMerge(var)
        else:
            var_merge.add(var)
    return var_merge.result(genes)


def _count_joined(group: h5py.Group, gene_map: np.ndarray, block_nnz: int) -> int:
    data, indices = group["data"], group["indices"]
    kept = 0
    for start in range(0, data.shape[0], block_nnz):
        stop = min(start + block_nnz, data.shape[0])
        kept += int(
            np.count_nonzero((gene_map[indices[start:stop]] >= 0) & (data[start:stop] != 0))
        )
    return kept


# ---------------------------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------------------------


def _write(plan: _Plan, out: h5py.File, compression: Compression, block_nnz: int) -> MergeSummary:
    n_obs = sum(source.n_obs for source in plan.sources)
    n_vars = len(plan.genes)
    frame_kwargs = {} if compression is None else {"compression": compression}

    # write_h5ad sets the root's encoding attributes by hand too: there is no element for "/".
    out.attrs["encoding-type"] = "anndata"
    out.attrs["encoding-version"] = "0.1.0"
    # anndata writes the encoding of each element; the sparse datasets are then replaced by
    # ones laid out with their final size (see _CsrWriter).
    write_elem(out, "X", sp.csr_matrix((0, n_vars), dtype=plan.dtypes["X"]))
    # When every source's counts layer is its X, so is the merged one: a hard link to X, the
    # matrix written once (half the bytes), as the samples' files store it.
    matrices = _MATRICES[:1] if plan.counts_is_x else _MATRICES
    empty = sp.csr_matrix((0, n_vars), dtype=plan.dtypes[_MATRICES[1]])
    write_elem(out, "layers", {} if plan.counts_is_x else {COUNTS_LAYER: empty})
    # Cell totals for the median: row sums are accumulated in X's dtype (float32 for counts).
    totals = np.zeros(n_obs, dtype=np.result_type(plan.dtypes["X"], np.float32))
    writers = {
        key: _CsrWriter(
            out[key],
            n_obs,
            sum(source.nnz[key] for source in plan.sources),
            compression,
            row_totals=totals if key == "X" else None,
        )
        for key in matrices
    }
    # obs starts empty and resizable; the samples' rows are appended (see _ObsAppender).
    empty_obs = plan.obs_schema.iloc[:0].set_axis(pd.Index([], dtype=object))
    write_elem(out, "obs", empty_obs, dataset_kwargs={"maxshape": (None,), **frame_kwargs})
    obs_appender = _ObsAppender(out["obs"], len(plan.obs_schema.columns))
    write_elem(out, "obsm", {})
    obsm_appenders = {}
    for key, schema in plan.obsm_schema.items():
        empty_frame = schema.iloc[:0].set_axis(pd.Index([], dtype=object))
        kwargs = {"maxshape": (None,), **frame_kwargs}
        write_elem(out["obsm"], key, empty_frame, dataset_kwargs=kwargs)
        obsm_appenders[key] = _ObsAppender(out["obsm"][key], len(schema.columns))

    hashes = np.empty(n_obs, dtype=np.uint64)
    buffers = (_Buffer(), _Buffer())  # for data and indices, shared by X and counts
    samples = []
    for code, source in enumerate(plan.sources):
        with _open_source(source.label, source.path) as f:
            obs = read_elem(f["obs"])
            if len(obs) != source.n_obs:
                raise ValueError(f"{source.path}: the file changed during the merge")
            names = pd.Index([f"{source.label}-{barcode}" for barcode in obs.index], dtype=object)
            first_row = writers["X"].rows
            hashes[first_row : first_row + len(names)] = pd.util.hash_array(names.to_numpy())
            obs_appender.add(_converted_frame(obs, plan.obs_schema, names, label_code=code))
            for key, appender in obsm_appenders.items():
                element = f.get(f"obsm/{key}")
                if element is None or _frame_length(element) != source.n_obs:
                    raise ValueError(f"{source.path}: the file changed during the merge")
                frame = _frame_columns(element, source.n_obs)
                appender.add(_converted_frame(frame, plan.obsm_schema[key], names))
            gene_map = None
            if not source.identity:
                gene_map = plan.genes.get_indexer(read_elem(f["var"]).index)
            for key in matrices:
                rows, nnz, total = writers[key].copy(f[key], gene_map, block_nnz, buffers)
                if (rows, nnz) != (source.n_obs, source.nnz[key]):
                    raise ValueError(f"{source.path}: the file changed during the merge")
                if key == "X":
                    samples.append(SampleSummary(source.label, str(source.path), rows, nnz, total))

    for appender in (obs_appender, *obsm_appenders.values()):
        appender.flush()
    if plan.counts_is_x:
        out["layers"][COUNTS_LAYER] = out["X"]
    write_elem(out, "var", plan.var, dataset_kwargs=frame_kwargs)
    for key in ("varm", "obsp", "varp", "uns"):
        write_elem(out, key, {})
    obs_index = out["obs"][out["obs"].attrs["_index"]]
    n_duplicates, duplicates = _duplicate_names(hashes, obs_index)
    x, counts = writers["X"], writers.get(_MATRICES[1], writers["X"])
    return MergeSummary(
        samples=tuple(samples),
        n_obs=obs_index.shape[0],
        n_vars=n_vars,
        nnz=int(x.indptr[-1]),
        x_sum=x.sum,
        x_checksum=x.checksum,
        counts_nnz=int(counts.indptr[-1]),
        counts_sum=counts.sum,
        counts_checksum=counts.checksum,
        median_total_counts=float(np.median(totals)) if n_obs else 0.0,
        n_duplicate_obs_names=n_duplicates,
        duplicate_obs_names=duplicates,
    )


def _converted_frame(
    frame: pd.DataFrame, schema: pd.DataFrame, names: pd.Index, *, label_code: int | None = None
) -> pd.DataFrame:
    """One source's obs (or obsm frame) with the merged columns and dtypes and its new names.

    Casting each part to the merged dtype is what pd.concat does before joining the parts
    (and what anndata's dtype unification does for categoricals). For obs, ``label_code`` is
    the source's code in the label column.
    """
    columns = {}
    for column, dtype in schema.dtypes.items():
        if label_code is not None and column == LABEL_COLUMN:
            columns[column] = pd.Categorical.from_codes(
                np.full(len(frame), label_code), dtype=dtype
            )
        else:
            # .array, not the Series: the frame is built positionally, without aligning on
            # the barcodes (which are replaced by the new names).
            columns[column] = frame[column].astype(dtype).array
    return pd.DataFrame(columns, index=names)


class _ObsAppender:
    """Appends frames to the resizable dataframe ``group`` (obs, an obsm frame), as anndata would.

    Frames are collected up to :data:`OBS_BATCH_ROWS` rows (fewer for frames of more than
    :data:`_BATCH_COLUMNS` columns); then anndata encodes them (into an in-memory HDF5 file) and
    every per-row dataset is appended to its counterpart: the columns, the index, categorical
    codes, nullable values and masks. Categories are not per-row, and are already the merged
    ones.
    """

    def __init__(self, group: h5py.Group, n_columns: int) -> None:
        self.group = group
        self.batch_rows = max(1, OBS_BATCH_ROWS * _BATCH_COLUMNS // max(_BATCH_COLUMNS, n_columns))
        self._pending: list[pd.DataFrame] = []
        self._rows = 0

    def add(self, frame: pd.DataFrame) -> None:
        self._pending.append(frame)
        self._rows += len(frame)
        if self._rows >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        frame = pd.concat(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._rows = [], 0
        with h5py.File(io.BytesIO(), "w") as scratch:
            write_elem(scratch, "frame", frame)
            _append_group(self.group, scratch["frame"])


def _append_group(dst: h5py.Group, src: h5py.Group) -> None:
    categorical = src.attrs.get("encoding-type") == "categorical"
    for name, item in src.items():
        if categorical and name == "categories":
            continue
        if isinstance(item, h5py.Group):
            _append_group(dst[name], item)
        elif item.shape[0]:
            target = dst[name]
            start = target.shape[0]
            target.resize(start + item.shape[0], axis=0)
            target[start:] = item[()]


class _CsrWriter:
    """Fills one CSR matrix of the output block by block and keeps its numbers.

    The datasets are created once with their final length (see :func:`_layout`).
    """

    def __init__(
        self,
        group: h5py.Group,
        n_rows: int,
        nnz: int,
        compression: Compression,
        *,
        row_totals: np.ndarray | None,
    ) -> None:
        self.n_vars = int(group.attrs["shape"][1])
        dtype = group["data"].dtype
        # scipy (and so ad.concat) stores indices and indptr as int32 unless a value can
        # exceed it.
        self.index_dtype = np.dtype(np.int32 if max(nnz, self.n_vars) <= _INT32_MAX else np.int64)
        for name in ("data", "indices", "indptr"):
            del group[name]
        group.attrs["shape"] = (n_rows, self.n_vars)
        self.data = group.create_dataset("data", **_layout(nnz, dtype, compression))
        self.indices = group.create_dataset(
            "indices", **_layout(nnz, self.index_dtype, compression)
        )
        self.indptr = group.create_dataset(
            "indptr", **_layout(n_rows + 1, self.index_dtype, compression)
        )
        zero = np.zeros(1, dtype=self.index_dtype)
        self.indptr.write_direct(zero, dest_sel=np.s_[0:1])
        self._crc = {"indptr": isal_zlib.crc32(zero), "indices": 0, "data": 0}
        self.rows = 0
        self.nnz = 0
        self.sum = 0.0
        self.row_totals = row_totals

    @property
    def checksum(self) -> str:
        return "".join(f"{self._crc[name]:08x}" for name in ("indptr", "indices", "data"))

    def copy(
        self,
        src: h5py.Group,
        gene_map: np.ndarray | None,
        block_nnz: int,
        buffers: tuple[_Buffer, _Buffer],
    ) -> tuple[int, int, float]:
        """Append the rows of the CSR group ``src``, remapping columns through ``gene_map``.

        Returns the rows, stored values and sum (float64) appended.
        """
        rows, nnz, total = self.rows, self.nnz, 0.0
        indptr = src["indptr"][()].astype(np.int64, copy=False)
        reorders = False
        index_dtype = self.index_dtype  # read straight into the output dtype when verbatim
        if gene_map is not None:
            reorders = bool(np.any(np.diff(gene_map[gene_map >= 0]) < 0))
            # Mapped columns come out in the output dtype; the source's are read as they are.
            gene_map = gene_map.astype(self.index_dtype, copy=False)
            index_dtype = src["indices"].dtype
        for first, last in _row_blocks(indptr, block_nnz):
            start, stop = int(indptr[first]), int(indptr[last])
            data = buffers[0].read(src["data"], start, stop, self.data.dtype)
            indices = buffers[1].read(src["indices"], start, stop, index_dtype)
            ends = indptr[first + 1 : last + 1] - start
            if gene_map is not None:
                data, indices, ends = _map_genes(data, indices, ends, gene_map, reorders)
            self._write(data, indices.astype(self.index_dtype, copy=False), ends)
            total += float(data.sum(dtype=np.float64))
        # The sample's sum is added as a whole, so x_sum is the sum of the samples' sums.
        self.sum += total
        return self.rows - rows, self.nnz - nnz, total

    def _write(self, data: np.ndarray, indices: np.ndarray, ends: np.ndarray) -> None:
        n = len(data)
        if n:
            where = np.s_[self.nnz : self.nnz + n]
            self.data.write_direct(data, dest_sel=where)
            self.indices.write_direct(indices, dest_sel=where)
            self._crc["data"] = isal_zlib.crc32(data, self._crc["data"])
            self._crc["indices"] = isal_zlib.crc32(indices, self._crc["indices"])
        indptr = (ends + self.nnz).astype(self.index_dtype)
        if len(indptr):
            self.indptr.write_direct(
                indptr, dest_sel=np.s_[self.rows + 1 : self.rows + 1 + len(indptr)]
            )
            self._crc["indptr"] = isal_zlib.crc32(indptr, self._crc["indptr"])
        if self.row_totals is not None:
            self.row_totals[self.rows : self.rows + len(ends)] = _row_sums(data, ends)
        self.nnz += n
        self.rows += len(ends)


def _layout(n: int, dtype: np.dtype, compression: Compression) -> dict[str, object]:
    """``create_dataset`` arguments of a 1-D dataset of final length ``n``."""
    if n == 0:  # an empty dataset can have no chunks
        return {"shape": (0,), "dtype": dtype}
    chunk = min(n, max(1, CHUNK_BYTES // dtype.itemsize))  # chunks cannot exceed the shape
    # No fill value is written: every element is written exactly once.
    layout = {"shape": (n,), "dtype": dtype, "chunks": (chunk,), "fill_time": "never"}
    if compression is not None:
        # Shuffling the bytes first halves lzf's output and shrinks gzip's by a third on
        # counts and column indices, and makes both faster (measured on full-size samples).
        layout.update(compression=compression, shuffle=True)
    return layout


def _row_blocks(indptr: np.ndarray, block_nnz: int) -> Iterator[tuple[int, int]]:
    """Ranges ``[first, last)`` of whole rows holding at most ``block_nnz`` values (or one row)."""
    n_rows = len(indptr) - 1
    first = 0
    while first < n_rows:
        last = int(np.searchsorted(indptr, indptr[first] + block_nnz, side="right")) - 1
        last = min(max(last, first + 1), n_rows)
        yield first, last
        first = last


class _Buffer:
    """A reusable read buffer, grown to the largest block seen.

    A fresh block-sized array per read would be a fresh mmap whose pages the kernel faults in
    and zeroes on every block: ~20% of the merge time.
    """

    def __init__(self) -> None:
        self._array = np.empty(0)

    def read(self, dataset: h5py.Dataset, start: int, stop: int, dtype: np.dtype) -> np.ndarray:
        """``dataset[start:stop]`` as ``dtype``, valid until the next read."""
        if self._array.dtype != dtype or len(self._array) < stop - start:
            self._array = np.empty(stop - start, dtype=dtype)
        buffer = self._array[: stop - start]
        if stop > start:
            dataset.read_direct(buffer, source_sel=np.s_[start:stop])
        return buffer


def _map_genes(
    data: np.ndarray, indices: np.ndarray, ends: np.ndarray, gene_map: np.ndarray, reorders: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns through ``gene_map`` (-1: dropped), like ad.concat's reindexing of a source.

    That reindexing is a sparse product with a 0/1 matrix, which also drops explicit zeros and
    leaves each row sorted by its new column: the same is done here.
    """
    columns = gene_map[indices]
    keep = (columns >= 0) & (data != 0)
    kept_before = np.concatenate(([0], np.cumsum(keep)))
    ends = kept_before[ends]
    data, columns = data[keep], columns[keep]
    if reorders:
        matrix = sp.csr_matrix(
            (data, columns, np.concatenate(([0], ends))), shape=(len(ends), len(gene_map))
        )
        matrix.sort_indices()
        data, columns = matrix.data, matrix.indices
    return data, columns, ends


def _row_sums(data: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per-row sums of one block, accumulated in the data dtype (fast; exact for counts)."""
    starts = np.concatenate(([0], ends[:-1]))
    sums = np.zeros(len(ends), dtype=np.result_type(data.dtype, np.float32))
    nonempty = ends > starts
    if nonempty.any():
        # reduceat sums from each start to the next one; empty rows are left out so that
        # the next start is the end of the row.
        sums[nonempty] = np.add.reduceat(data, starts[nonempty])
    return sums


def _duplicate_names(hashes: np.ndarray, index: h5py.Dataset) -> tuple[int, tuple[str, ...]]:
    """Count duplicated obs names from their 64-bit hashes, confirmed on the written names.

    Only names whose hash repeats are read back (normally none), so hash collisions cannot
    be mistaken for duplicates and the names need not be held in memory.
    """
    order = np.argsort(hashes, kind="stable")
    repeated = hashes[order][1:] == hashes[order][:-1]
    if not repeated.any():
        return 0, ()
    flagged = np.zeros(len(hashes), dtype=bool)
    flagged[1:] |= repeated
    flagged[:-1] |= repeated
    names = pd.Index(index.asstr()[np.sort(order[flagged])], dtype=object)
    duplicated = names[names.duplicated(keep=False)].unique()
    return int(names.duplicated().sum()), tuple(duplicated[:DUPLICATE_EXAMPLES])
