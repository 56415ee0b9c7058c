"""Incremental merge: a new, replaced or removed sample costs O(that sample), not O(the study).

:func:`update_merged` keeps what :func:`~sc_assets.core.merge.merge_h5ad` writes, but stores
each sample's matrices once, in an immutable **part** (the merge's own copy, never the
per-sample file, which users rewrite in place), and writes a small **view** file at the merged
path that strings the parts together::

    storage/merged_adata.h5ad            the view: obs, var, indptr written for real
    storage/merged_adata.h5ad.parts/     <label>.<random>.h5, one per sample and version
                                         history.json (retired views, for collect_garbage)
                                         merge.lock (one merge or clean-up at a time)

In the view, ``X/data`` and ``X/indices`` (and ``layers/counts``' when it is not ``X``
itself) are HDF5 *external storage*: one contiguous dataset whose bytes are segments of the
parts' files, at absolute paths. ``X/indptr`` is a *virtual dataset*: the real values from
``X/_indptr`` in the view itself, plus, mapped onto element 0, each part's ``X/indptr[0]``
(0, as the view's): a canary that makes HDF5 open every part as an HDF5 file whenever the
matrix is read. What that buys, observed with HDF5 2.0.0 (h5py 3.16) and 1.14.6:

* a part missing or unreadable: reading ``X`` fails (``unable to open external raw data
  file``); a virtual dataset alone would return fill values there, silently, also when the
  process runs out of file descriptors;
* a part truncated, or replaced by a file that is not HDF5: reading ``X`` fails (``truncated
  file: eof = ...`` / ``file signature not found``, from the canary); external storage alone
  reads zeros past the end of a short file. HDF5 1.14.2 (h5py 3.11) ignores this in the
  canary: there only :func:`verify_merged` finds a truncated part;
* a part's bytes changed in place with its size kept: plain reads return them; only
  :func:`verify_merged` (size and mtime, or ``deep=True``: the CRC-32 of every segment) finds it.

Readers see one whole version: parts are never written after their view exists, the view is
written under a temporary name and renamed over the merged path, and an old view keeps its
parts until :func:`collect_garbage` finds it retired for longer than a grace period and open
in no process (h5py's open files, and ``/proc/*/fd`` on Linux) and no merge running. (A
backed AnnData reads its version while its file stays open; anndata's ``to_memory()`` closes
it, and a later ``.X`` opens the path again: the newest version, as with any file replaced
by a rename.)

An update writes the new samples' parts, then the view: obs rows of samples the previous view
held are copied from it (categorical codes renumbered when categories change), the others
converted from their parts as ``merge_h5ad`` converts them; var is decided from per-part
column digests; the matrices' part of the view is a list of byte ranges.

The numbers of :class:`~sc_assets.core.merge.MergeSummary` are the same as ``merge_h5ad``'s
for the same sources: per-part numbers (nnz, sums, CRC-32 and length of the bytes, row totals)
are kept in the view and the parts, checksums over the concatenated datasets are combined
from the parts' (``crc32_combine``), the ``indptr`` checksum, obs length, names and duplicate
check come from what this view writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from anndata.io import read_elem, write_elem
from isal import isal_zlib

from sc_assets.core import merge
from sc_assets.core.atomic import atomic_path
from sc_assets.core.merge import BLOCK_NNZ, Compression, MergeSummary, SampleSummary, merge_h5ad
from sc_assets.core.qc import COUNTS_LAYER

#: Root attribute of the view holding its manifest (JSON).
MANIFEST_ATTR = "sc_assets_incremental"
#: Root attribute of the view explaining, to someone looking with h5ls, what it depends on.
README_ATTR = "sc_assets_readme"
FORMAT_VERSION = 1
PARTS_SUFFIX = ".parts"
HISTORY_NAME = "history.json"
LOCK_NAME = "merge.lock"
#: How long a retired view's parts are kept for readers in other processes or on other hosts.
DEFAULT_GRACE_SECONDS = 3600.0
#: Whether this HDF5 reports a truncated (or non-HDF5) virtual dataset source instead of reading
#: fill values, which makes plain reads of a view fail on a truncated part (seen in 1.14.6 and
#: 2.0.0, not in 1.14.2). Without it, only verify_merged finds truncated parts.
TRUNCATION_FAILS_ON_READ = h5py.version.hdf5_version_tuple >= (1, 14, 6)

_X, _COUNTS = merge._MATRICES
_REBUILD = (
    "rebuild it with update_merged(sources, '{path}', full=True) (in the platform: "
    "re-materialize merged_adata), or restore the part"
)


class MergedFileError(RuntimeError):
    """A merged view cannot be trusted: a part it relies on is missing, truncated or changed."""


@dataclass(frozen=True)
class IncrementalResult:
    """What :func:`update_merged` did."""

    summary: MergeSummary
    """The numbers of the merged file, as ``merge_h5ad`` gives them for the same sources."""
    merge_mode: Literal["incremental", "full"]
    full_reason: str | None
    """Why every part was rewritten (None for an incremental update)."""
    added: tuple[str, ...]
    replaced: tuple[str, ...]
    """Labels whose source changed, or whose part was missing or damaged (also in ``repaired``)."""
    removed: tuple[str, ...]
    repaired: tuple[str, ...]
    bytes_written: int
    """Bytes of the new parts and the view (0 when nothing changed and nothing was written)."""
    version: str

    def metadata(self) -> dict[str, object]:
        """Plain values for a materialization's metadata."""
        return {
            "merge_mode": self.merge_mode,
            "full_reason": self.full_reason or "",
            "bytes_written": self.bytes_written,
            "samples_added": list(self.added),
            "samples_replaced": list(self.replaced),
            "samples_removed": list(self.removed),
            "parts_repaired": list(self.repaired),
            "merged_version": self.version,
        }


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_merged` found."""

    path: str
    kind: Literal["view", "self-contained"]
    version: str | None
    problems: tuple[str, ...]
    parts_checked: int
    deep: bool

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_broken(self) -> None:
        """Raise :class:`MergedFileError` naming every problem and how to rebuild."""
        if self.problems:
            raise MergedFileError(
                f"{self.path} cannot be trusted: "
                + "; ".join(self.problems)
                + ". "
                + _REBUILD.format(path=self.path)
            )


@dataclass(frozen=True)
class GarbageReport:
    """What :func:`collect_garbage` removed and why it kept the rest."""

    removed: tuple[str, ...] = ()
    kept_in_use: tuple[str, ...] = ()
    """Parts of retired views that a process still has open."""
    kept_in_grace: tuple[str, ...] = ()
    skipped: str | None = None
    """Why nothing was looked at (a merge is running)."""


# ---------------------------------------------------------------------------------------------
# The manifest: what the view is made of, stored in the view itself.
# ---------------------------------------------------------------------------------------------


@dataclass
class _Matrix:
    nnz: int
    total: float
    data: tuple[int, int, int]
    """Offset in the part file, bytes, CRC-32 of those bytes."""
    indices: tuple[int, int, int]


@dataclass
class _Entry:
    label: str
    source: str
    identity: str
    part: str
    part_size: int
    part_mtime_ns: int
    n_obs: int
    genes_hash: str
    """Of the source's own gene names (its part holds the merged genes)."""
    matrices: dict[str, _Matrix]
    """``X``, and ``layers/counts`` unless the part's counts layer is a link to its X."""
    dtypes: dict[str, str]
    """The source's own data dtypes (the part's are the view's)."""
    keys: dict[str, list[str]]
    raw: bool
    frames: list[str]
    var_digests: list[tuple[str, str | None]]
    heads: dict[str, dict | None]
    """obs's and each obsm frame's representative rows (see merge._representative_rows), as
    JSON, or None for those that JSON cannot carry exactly (read from the part instead)."""

    def matrix(self, key: str) -> _Matrix:
        return self.matrices.get(key, self.matrices[_X])

    @classmethod
    def from_json(cls, d: dict) -> _Entry:
        d = dict(d)
        d["matrices"] = {
            k: _Matrix(m["nnz"], m["total"], tuple(m["data"]), tuple(m["indices"]))
            for k, m in d["matrices"].items()
        }
        d["var_digests"] = [tuple(x) for x in d["var_digests"]]
        return cls(**d)


@dataclass
class _Manifest:
    version: str
    created: float
    folder: str
    genes_hash: str
    genes_name: str | None
    n_vars: int
    dtypes: dict[str, str]
    index_dtypes: dict[str, str]
    compression: str | None
    entries: list[_Entry]
    summary: dict
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> _Manifest:
        d = json.loads(text)
        d["entries"] = [_Entry.from_json(e) for e in d["entries"]]
        return cls(**d)


def parts_folder(out_path: str | os.PathLike[str]) -> Path:
    """The folder of the parts of the view at ``out_path``."""
    out_path = Path(out_path).absolute()
    return out_path.with_name(out_path.name + PARTS_SUFFIX)


def _read_manifest(out_path: Path) -> _Manifest | None:
    """The view's manifest; None when there is no file or it is not a view (e.g. a full merge)."""
    if not out_path.is_file():
        return None
    try:
        with h5py.File(out_path, "r") as f:
            text = f.attrs.get(MANIFEST_ATTR)
    except OSError:
        return None
    if text is None:
        return None
    manifest = _Manifest.from_json(text)
    return manifest if manifest.format == FORMAT_VERSION else None


def _summary_from_json(d: dict, paths: Mapping[str, str]) -> MergeSummary:
    d = dict(d)
    d["samples"] = tuple(
        SampleSummary(**{**s, "path": paths.get(s["label"], s["path"])}) for s in d["samples"]
    )
    d["duplicate_obs_names"] = tuple(d["duplicate_obs_names"])
    return MergeSummary(**d)


# ---------------------------------------------------------------------------------------------
# update_merged
# ---------------------------------------------------------------------------------------------


@dataclass
class _Job:
    """One call of update_merged: where, what, how."""

    labels: list[str]
    paths: dict[str, Path]
    """Absolute, for reading; ``given`` as the caller wrote them, for the summary."""
    given: dict[str, str]
    identities: dict[str, str]
    out_path: Path
    folder: Path
    compression: Compression
    block_nnz: int
    now: float | None

    @property
    def time(self) -> float:
        return time.time() if self.now is None else self.now


@dataclass
class _Target:
    """What every part of a view is written on: the merged genes and the matrices' dtypes."""

    genes: pd.Index
    dtypes: dict[str, np.dtype]
    index_dtypes: dict[str, np.dtype]


def update_merged(
    sources: Sequence[tuple[str, str | os.PathLike[str]]],
    out_path: str | os.PathLike[str],
    *,
    versions: Mapping[str, str] | None = None,
    compression: Compression = None,
    full: bool = False,
    block_nnz: int = BLOCK_NNZ,
    now: float | None = None,
) -> IncrementalResult:
    """Make ``out_path`` the merge of ``sources``, writing only what changed since last time.

    The result, read with anndata, equals ``merge_h5ad(sources, ...)``'s element by element
    (see :mod:`sc_assets.core.merge`). Sources whose label and identity are those of a part of
    the current view reuse that part; the others get a new part; labels no longer listed are
    dropped. Then a new view (obs, var, indptr: per-cell metadata) replaces ``out_path``
    atomically. Everything is rewritten (``merge_mode="full"``, with the reason) when there is
    no view yet, when asked (``full=True``), or when the merged genes or the matrices' dtypes
    change (a sample whose genes change the inner join, a float64 sample among float32 ones,
    more than 2**31 stored values). Concurrent calls on the same ``out_path`` run one after
    the other (a lock in the parts folder).

    Parameters
    ----------
    sources
        ``(label, path)`` pairs in merge order, as for ``merge_h5ad``.
    out_path
        The merged view; its parts go to :func:`parts_folder` ``(out_path)``.
    versions
        Optional identity of each source's content by label (e.g. a data version or a hash the
        caller already has). A label without one is identified by its file's device, inode,
        size, mtime and ctime, which a rewrite in place or a rename over it changes.
    compression
        HDF5 filter of the view's obs, var and obsm frames. The matrices stay uncompressed in
        the parts (external storage is raw bytes); :func:`export_merged` writes a compressed
        self-contained copy.
    full
        Rewrite every part (e.g. after :func:`verify_merged` found a damaged one).
    block_nnz
        Stored values copied per block, as for ``merge_h5ad``.
    now
        The time recorded for the retired view (tests); default: the clock.

    Raises
    ------
    ValueError, FileNotFoundError
        As ``merge_h5ad`` for bad sources.
    """
    if compression not in (None, "lzf", "gzip"):
        raise ValueError(f"compression must be None, 'lzf' or 'gzip', not {compression!r}")
    merge.check_labels(sources)
    labels = [label for label, _ in sources]
    out_path = Path(out_path).absolute()
    paths = {label: Path(path).absolute() for label, path in sources}
    for label, path in paths.items():
        if path == out_path:
            raise ValueError(f"out_path {out_path} is the source {label!r} itself")
    versions = versions or {}
    identities = {label: _identity(paths[label], versions.get(label)) for label in labels}
    folder = parts_folder(out_path)
    folder.mkdir(parents=True, exist_ok=True)
    given = {label: str(Path(path)) for label, path in sources}
    job = _Job(labels, paths, given, identities, out_path, folder, compression, block_nnz, now)

    with _locked(folder, blocking=True):
        old = _read_manifest(out_path)
        reused: dict[str, _Entry] = {}
        repaired: list[str] = []
        for entry in old.entries if old else []:
            if entry.label in paths and entry.identity == identities[entry.label]:
                if _part_intact(entry, folder):
                    reused[entry.label] = entry
                else:
                    repaired.append(entry.label)
        infos = {label: _inspect(label, paths[label]) for label in labels if label not in reused}
        if full:
            return _full(job, infos, old, "requested")
        if old is None:
            return _full(job, infos, old, "no incremental view yet (first incremental merge)")
        reason, target = _incremental_blocker(job, old, reused, infos)
        if reason is not None:
            return _full(job, infos, old, reason)

        unchanged = (
            not infos
            and [e.label for e in old.entries] == labels
            and old.folder == str(folder)
            and old.compression == compression
        )
        if unchanged:
            summary = _summary_from_json(old.summary, given)
            return IncrementalResult(summary, "incremental", None, (), (), (), (), 0, old.version)
        new = {label: _write_part(job, label, info, target) for label, info in infos.items()}
        entries = [reused.get(label) or new[label] for label in labels]
        return _finish(job, entries, target, old, None, tuple(repaired))


def _finish(
    job: _Job,
    entries: list[_Entry],
    target: _Target,
    old: _Manifest | None,
    full_reason: str | None,
    repaired: tuple[str, ...],
) -> IncrementalResult:
    """Write the view of ``entries``, rename it into place and say what changed."""
    for entry in entries:
        entry.source = job.given[entry.label]
    manifest = _Manifest(
        version=uuid.uuid4().hex,
        created=job.time,
        folder=str(job.folder),
        genes_hash=_names_hash(target.genes),
        genes_name=target.genes.name,
        n_vars=len(target.genes),
        dtypes={k: str(v) for k, v in target.dtypes.items()},
        index_dtypes={k: str(v) for k, v in target.index_dtypes.items()},
        compression=job.compression,
        entries=entries,
        summary={},
    )
    old_parts = {e.part for e in old.entries} if old else set()
    old_labels = [e.label for e in old.entries] if old else []
    written = [e for e in entries if e.part not in old_parts]
    for entry in written:  # all at the end: the kernel writes them back together
        _fsync(job.folder / entry.part)
    summary, view_bytes = _swap_view(job, manifest, old)
    return IncrementalResult(
        summary=summary,
        merge_mode="full" if full_reason else "incremental",
        full_reason=full_reason,
        added=tuple(e.label for e in written if e.label not in old_labels),
        replaced=tuple(e.label for e in written if e.label in old_labels),
        removed=tuple(label for label in old_labels if label not in job.paths),
        repaired=repaired,
        bytes_written=sum(e.part_size for e in written) + view_bytes,
        version=manifest.version,
    )


def _incremental_blocker(
    job: _Job, old: _Manifest, reused: dict[str, _Entry], infos: dict[str, _SourceInfo]
) -> tuple[str | None, _Target | None]:
    """Why the parts of ``old`` cannot be kept (None if they can), and what they are written on."""
    with h5py.File(job.out_path, "r") as f:
        genes = pd.Index(read_elem(f["var"][f["var"].attrs["_index"]]), name=old.genes_name)

    def info_of(label: str) -> _Entry | _SourceInfo:
        return reused.get(label) or infos[label]

    if any(info_of(label).genes_hash != old.genes_hash for label in job.labels):
        # Some sample's genes are not exactly the merged genes: the inner join decides.
        joined = None
        for label in job.labels:
            if label in infos:
                own = infos[label].genes
            elif reused[label].genes_hash == old.genes_hash:
                own = genes
            else:
                with h5py.File(job.folder / reused[label].part, "r") as f:
                    own = pd.Index(read_elem(f["uns/sc_assets_part/source_genes"]))
            joined = own if joined is None else joined.intersection(own)
        if not joined.equals(genes):
            return f"the genes common to all samples change ({len(genes)} -> {len(joined)})", None
    target = _Target(genes, {}, {})
    for key in merge._MATRICES:
        merged = np.result_type(*(np.dtype(info_of(label).dtypes[key]) for label in job.labels))
        if merged != np.dtype(old.dtypes[key]):
            return f"the data type of {key} changes ({old.dtypes[key]} -> {merged})", None
        for info in infos.values():
            info.join(genes, key)
        nnz = sum(
            reused[label].matrix(key).nnz if label in reused else infos[label].nnz[key]
            for label in job.labels
        )
        index_dtype = _index_dtype(nnz, len(genes))
        if index_dtype != np.dtype(old.index_dtypes[key]):
            return f"{key} needs {index_dtype} indices ({nnz} stored values)", None
        target.dtypes[key], target.index_dtypes[key] = merged, index_dtype
    _refuse_unmerged([info_of(label) for label in job.labels])
    return None, target


def _refuse_unmerged(infos: Sequence[_Entry | _SourceInfo]) -> None:
    """merge_h5ad's refusal of elements that every source has and it does not merge."""
    common = {
        key: set.intersection(*(set(info.keys[key]) for info in infos))
        for key in ("obsm", "varm", "varp", "layers")
    }
    frames = set.intersection(*(set(info.frames) for info in infos))
    merge._refuse_unmerged(common, all(info.raw for info in infos), merged_obsm=frames)


def _full(
    job: _Job, infos: dict[str, _SourceInfo], old: _Manifest | None, reason: str
) -> IncrementalResult:
    """Write a part for every source on the merged genes, then the view."""
    plan = merge._plan([(label, job.paths[label]) for label in job.labels], job.out_path, BLOCK_NNZ)
    genes = plan.genes
    target = _Target(
        genes,
        dict(plan.dtypes),
        {
            key: _index_dtype(sum(s.nnz[key] for s in plan.sources), len(genes))
            for key in merge._MATRICES
        },
    )
    entries = []
    for source in plan.sources:
        info = infos.get(source.label) or _inspect(source.label, job.paths[source.label])
        info.nnz = dict(source.nnz)
        entries.append(_write_part(job, source.label, info, target))
    return _finish(job, entries, target, old, reason, ())


def _index_dtype(nnz: int, n_vars: int) -> np.dtype:
    # scipy's (and so merge_h5ad's) rule for the index dtype of the merged matrices
    return np.dtype(np.int32 if max(nnz, n_vars) <= merge._INT32_MAX else np.int64)


def _identity(path: Path, version: str | None) -> str:
    if version is not None:
        return f"version:{version}"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: source does not exist")
    st = path.stat()
    return f"stat:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _names_hash(names: pd.Index) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in names:
        digest.update(str(name).encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Sources and parts
# ---------------------------------------------------------------------------------------------


@dataclass
class _SourceInfo:
    """What the planning needs of a source that gets a new part."""

    path: Path
    n_obs: int
    nnz: dict[str, int]
    dtypes: dict[str, np.dtype]
    counts_is_x: bool
    genes: pd.Index
    genes_hash: str
    keys: dict[str, list[str]]
    raw: bool
    obs_head: pd.DataFrame
    frame_heads: dict[str, pd.DataFrame]

    @property
    def frames(self) -> list[str]:
        return sorted(self.frame_heads)

    def join(self, genes: pd.Index, key: str) -> None:
        """Count the stored values left after the inner join on ``genes``."""
        if not self.genes.equals(genes):
            with merge._open_source("", self.path) as f:
                gene_map = genes.get_indexer(self.genes)
                self.nnz[key] = merge._count_joined(f[key], gene_map, BLOCK_NNZ)


def _inspect(label: str, path: Path) -> _SourceInfo:
    with merge._open_source(label, path) as f:
        n_obs, nnz, dtypes = merge._check_matrices(f, path)
        genes = pd.Index(read_elem(f["var"][f["var"].attrs["_index"]]))
        if not genes.is_unique:
            duplicated = genes[genes.duplicated()][0]
            raise ValueError(f"{path}: gene names are not unique, e.g. {duplicated!r}")
        return _SourceInfo(
            path=path,
            n_obs=n_obs,
            nnz=nnz,
            dtypes=dtypes,
            counts_is_x=f[_X] == f[_COUNTS],
            genes=genes,
            genes_hash=_names_hash(genes),
            keys={k: sorted(f[k]) if k in f else [] for k in ("obsm", "varm", "varp", "layers")},
            raw="raw" in f,
            obs_head=merge._representative_rows(merge._frame_columns(f["obs"], n_obs)),
            frame_heads=merge._obsm_frames(f, path, n_obs, None),
        )


def _part_intact(entry: _Entry, folder: Path) -> bool:
    try:
        st = (folder / entry.part).stat()
    except FileNotFoundError:
        return False
    return st.st_size == entry.part_size and st.st_mtime_ns == entry.part_mtime_ns


def _write_part(job: _Job, label: str, info: _SourceInfo, target: _Target) -> _Entry:
    """Copy one source into a new part: an .h5ad of its own, on the merged genes, whose
    matrices are contiguous so that the view can point at their bytes."""
    name = f"{re.sub(r'[^A-Za-z0-9._-]', '_', label)[:64]}.{uuid.uuid4().hex[:12]}.h5"
    part = job.folder / name
    dtypes, index_dtypes = target.dtypes, target.index_dtypes
    gene_map = None if info.genes.equals(target.genes) else target.genes.get_indexer(info.genes)
    # The counts layer stays a link to X when it is one in the source and the merged file
    # stores both alike (otherwise the view could not read it from X's bytes).
    linked = info.counts_is_x and (dtypes[_X], index_dtypes[_X]) == (
        dtypes[_COUNTS],
        index_dtypes[_COUNTS],
    )
    keys = (_X,) if linked else merge._MATRICES
    totals = np.zeros(info.n_obs, dtype=np.result_type(dtypes[_X], np.float32))
    try:
        with merge._open_source(label, info.path) as src, h5py.File(part, "w") as f:
            f.attrs["encoding-type"] = "anndata"
            f.attrs["encoding-version"] = "0.1.0"
            write_elem(f, "layers", {})
            stats = {
                key: _copy_csr(
                    src[key],
                    f.create_group(key),
                    (info.n_obs, len(target.genes), info.nnz[key]),
                    (dtypes[key], index_dtypes[key]),
                    gene_map,
                    job.block_nnz,
                    totals if key == _X else None,
                    info.path,
                )
                for key in keys
            }
            if linked:
                f["layers"][COUNTS_LAYER] = f[_X]
            f.copy(src["obs"], f, "obs")
            if gene_map is None:
                f.copy(src["var"], f, "var")
            else:
                write_elem(f, "var", read_elem(src["var"]).reindex(target.genes))
            write_elem(f, "obsm", {})
            for key in info.frames:
                f.copy(src["obsm"][key], f["obsm"], key)
            for key in ("varm", "obsp", "varp"):
                write_elem(f, key, {})
            barcodes = read_elem(f["obs"][f["obs"].attrs["_index"]])
            names = np.array([f"{label}-{barcode}" for barcode in barcodes], dtype=object)
            meta = {
                "obs_head": info.obs_head,
                "frame_heads": dict(info.frame_heads),
                "row_totals": totals,
                "name_hashes": pd.util.hash_array(names),
            }
            if gene_map is not None:
                meta["source_genes"] = info.genes.to_numpy(dtype=object)
            write_elem(f, "uns", {"sc_assets_part": meta})
            var = read_elem(f["var"])
            offsets = {key: (f[key]["data"].id, f[key]["indices"].id) for key in keys}
            offsets = {key: tuple(i.get_offset() or 0 for i in ids) for key, ids in offsets.items()}
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    matrices = {}
    for key in keys:
        nnz, total, (crc_data, crc_indices) = stats[key]
        sizes = (nnz * dtypes[key].itemsize, nnz * index_dtypes[key].itemsize)
        matrices[key] = _Matrix(
            nnz,
            total,
            (offsets[key][0], sizes[0], crc_data),
            (offsets[key][1], sizes[1], crc_indices),
        )
    st = part.stat()
    return _Entry(
        label=label,
        source=str(info.path),
        identity=job.identities[label],
        part=name,
        part_size=st.st_size,
        part_mtime_ns=st.st_mtime_ns,
        n_obs=info.n_obs,
        genes_hash=info.genes_hash,
        matrices=matrices,
        dtypes={k: str(info.dtypes[k]) for k in merge._MATRICES},
        keys=info.keys,
        raw=info.raw,
        frames=info.frames,
        var_digests=[(str(c), _column_digest(var[c])) for c in var.columns],
        heads={
            "obs": _head_to_json(info.obs_head),
            **{f"obsm/{k}": _head_to_json(v) for k, v in info.frame_heads.items()},
        },
    )


def _copy_csr(
    src: h5py.Group,
    dst: h5py.Group,
    sizes: tuple[int, int, int],
    dtypes: tuple[np.dtype, np.dtype],
    gene_map: np.ndarray | None,
    block_nnz: int,
    row_totals: np.ndarray | None,
    path: Path,
) -> tuple[int, float, tuple[int, int]]:
    """Copy the CSR group ``src`` (rows, genes and stored values of ``sizes`` after the join)
    into contiguous datasets of ``dst`` with merge_h5ad's writer's dtypes, gene mapping and
    sums; returns nnz, sum and the CRC-32 of the data and of the indices bytes."""
    n_rows, n_vars, nnz = sizes
    dtype, index_dtype = dtypes
    dst.attrs["encoding-type"] = "csr_matrix"
    dst.attrs["encoding-version"] = "0.1.0"
    dst.attrs["shape"] = (n_rows, n_vars)
    data = dst.create_dataset("data", shape=(nnz,), dtype=dtype)  # contiguous: raw bytes
    indices = dst.create_dataset("indices", shape=(nnz,), dtype=index_dtype)
    src_indptr = src["indptr"][()].astype(np.int64, copy=False)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    read_dtype, reorders = index_dtype, False
    if gene_map is not None:
        reorders = bool(np.any(np.diff(gene_map[gene_map >= 0]) < 0))
        gene_map = gene_map.astype(index_dtype, copy=False)
        read_dtype = src["indices"].dtype
    buffers = (merge._Buffer(), merge._Buffer())
    written, rows, total, crc_data, crc_indices = 0, 0, 0.0, 0, 0
    for first, last in merge._row_blocks(src_indptr, block_nnz):
        start, stop = int(src_indptr[first]), int(src_indptr[last])
        values = buffers[0].read(src["data"], start, stop, dtype)
        columns = buffers[1].read(src["indices"], start, stop, read_dtype)
        ends = src_indptr[first + 1 : last + 1] - start
        if gene_map is not None:
            values, columns, ends = merge._map_genes(values, columns, ends, gene_map, reorders)
        columns = columns.astype(index_dtype, copy=False)
        n = len(values)
        if written + n > nnz:
            raise ValueError(f"{path}: the file changed during the merge")
        if n:
            where = np.s_[written : written + n]
            data.write_direct(values, dest_sel=where)
            indices.write_direct(columns, dest_sel=where)
            crc_data = isal_zlib.crc32(values, crc_data)
            crc_indices = isal_zlib.crc32(columns, crc_indices)
        indptr[rows + 1 : rows + 1 + len(ends)] = ends + written
        if row_totals is not None:
            row_totals[rows : rows + len(ends)] = merge._row_sums(values, ends)
        total += float(values.sum(dtype=np.float64))
        written += n
        rows += len(ends)
    if (rows, written) != (n_rows, nnz):
        raise ValueError(f"{path}: the file changed during the merge")
    dst.create_dataset("indptr", data=indptr.astype(index_dtype))
    return nnz, total, (crc_data, crc_indices)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)  # a folder too, on Linux
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# var: merge="same" from per-part column digests
# ---------------------------------------------------------------------------------------------


def _column_digest(column: pd.Series) -> str | None:
    """A digest such that equal digests mean ``Series.equals``; for kinds "num" and "str",
    different digests also mean not equal. None: compare the values themselves."""
    dtype = column.dtype
    digest = hashlib.blake2b(digest_size=16)
    if isinstance(dtype, pd.CategoricalDtype):
        # Series.equals: the same values and the same set of categories (their order too
        # when ordered): digest the values under the categories in a canonical order.
        categories = dtype.categories
        order = np.arange(len(categories))
        if not dtype.ordered:
            order = np.array(sorted(order, key=lambda i: repr(categories[i])), dtype=np.int64)
        rank = np.full(len(categories) + 1, -1, dtype=np.int64)
        rank[order] = np.arange(len(categories))
        digest.update(repr([repr(categories[i]) for i in order]).encode())
        digest.update(str(categories.dtype).encode())
        digest.update(np.ascontiguousarray(rank[np.asarray(column.array.codes, dtype=np.int64)]))
        return f"cat:{dtype.ordered}:{digest.hexdigest()}"
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        array = column.to_numpy()
        if dtype.kind == "f":  # Series.equals: -0.0 equals 0.0, NaN equals NaN
            array = np.where(np.isnan(array), np.nan, array + 0.0).astype(dtype)
        digest.update(np.ascontiguousarray(array))
        return f"num:{dtype}:{digest.hexdigest()}"
    if isinstance(dtype, np.dtype) and dtype.kind == "O":
        array = column.to_numpy()
        if all(type(v) is str for v in array):
            for v in array:
                digest.update(v.encode("utf-8", "surrogatepass") + b"\0")
            return f"str:object:{digest.hexdigest()}"
    return None


def _merged_var(entries: list[_Entry], folder: Path, genes: pd.Index) -> pd.DataFrame:
    """``merge="same"`` of the parts' var as merge._VarMerge does it, reading only the first
    part's var, and another part's column only where the digests cannot decide."""
    with h5py.File(folder / entries[0].part, "r") as f:
        first = read_elem(f["var"])
    first_digests = dict(entries[0].var_digests)
    decisive = ("num:", "str:")
    columns = list(first.columns)
    for entry in entries[1:]:
        kept = set(columns)
        columns = []
        for column, digest in entry.var_digests:
            if column not in kept:
                continue
            mine = first_digests[column]
            if mine is not None and mine == digest:
                columns.append(column)
            elif not (
                mine and digest and mine.startswith(decisive) and digest.startswith(decisive)
            ):
                with h5py.File(folder / entry.part, "r") as f:
                    values = pd.Series(read_elem(f["var"][column]), index=first.index)
                if values.equals(first[column]):
                    columns.append(column)
    return pd.DataFrame({column: first[column] for column in columns}, index=genes)


# ---------------------------------------------------------------------------------------------
# The view
# ---------------------------------------------------------------------------------------------


def _swap_view(job: _Job, manifest: _Manifest, old: _Manifest | None) -> tuple[MergeSummary, int]:
    """Write the view of ``manifest`` and rename it over the merged path, retiring ``old``."""
    _fsync(job.folder)  # the new parts' names are durable before a view names them
    previous = None
    if old is not None:
        st = job.out_path.stat()
        retiring = {
            "version": old.version,
            "view": [st.st_dev, st.st_ino],
            "parts": [e.part for e in old.entries],
            "retired_at": job.time,
        }
        rows = np.cumsum([0] + [e.n_obs for e in old.entries])
        previous = h5py.File(job.out_path, "r")
        previous_rows = {e.part: int(row) for e, row in zip(old.entries, rows, strict=False)}
    try:
        with atomic_path(job.out_path) as tmp:
            reuse = (previous, previous_rows) if previous is not None else None
            summary = _write_view(tmp, job.folder, manifest, reuse)
            size = tmp.stat().st_size
            if old is not None:
                # Recorded before the rename: if that fails, GC keeps the current view's parts
                # anyway; if it succeeds, the old view is known to be retired.
                _write_history(job.folder, [*_read_history(job.folder), retiring])
    finally:
        if previous is not None:
            previous.close()
    return summary, size


def _write_view(
    tmp: Path,
    folder: Path,
    manifest: _Manifest,
    previous: tuple[h5py.File, dict[str, int]] | None,
) -> MergeSummary:
    entries = manifest.entries
    n_obs = sum(e.n_obs for e in entries)
    frame_kwargs = {} if manifest.compression is None else {"compression": manifest.compression}
    common_frames = sorted(set.intersection(*(set(e.frames) for e in entries)))
    linked = all(_COUNTS not in e.matrices for e in entries)
    keys = (_X,) if linked else merge._MATRICES
    # One pass over the parts for what is per cell or per part: obs schema, indptr, totals.
    heads, frame_heads = [], {key: [] for key in common_frames}
    local_indptr = {key: [] for key in keys}
    totals = np.empty(n_obs, dtype=np.result_type(np.dtype(manifest.dtypes[_X]), np.float32))
    hashes = np.empty(n_obs, dtype=np.uint64)
    row = 0
    for entry in entries:
        with h5py.File(folder / entry.part, "r") as f:
            meta = f["uns/sc_assets_part"]
            heads.append(_head(entry, "obs", meta["obs_head"]))
            for key in common_frames:
                frame_heads[key].append(_head(entry, f"obsm/{key}", meta["frame_heads"][key]))
            for key in keys:
                local_indptr[key].append(f[key if key in entry.matrices else _X]["indptr"][()])
            meta["row_totals"].read_direct(totals, dest_sel=np.s_[row : row + entry.n_obs])
            meta["name_hashes"].read_direct(hashes, dest_sel=np.s_[row : row + entry.n_obs])
        row += entry.n_obs
    obs_schema, obsm_schema = merge._schemas(heads, frame_heads, [e.label for e in entries])
    with h5py.File(folder / entries[0].part, "r") as f:
        names = read_elem(f["var"][f["var"].attrs["_index"]])
    genes = pd.Index(np.asarray(names, dtype=object), name=manifest.genes_name)
    var = _merged_var(entries, folder, genes)

    with h5py.File(tmp, "w") as out:
        out.attrs["encoding-type"] = "anndata"
        out.attrs["encoding-version"] = "0.1.0"
        write_elem(out, "layers", {})
        numbers = {
            key: _write_matrix_view(out, key, manifest, folder, local_indptr[key]) for key in keys
        }
        if linked:
            out["layers"][COUNTS_LAYER] = out[_X]
            numbers[_COUNTS] = numbers[_X]
        _write_frames(out, entries, folder, obs_schema, obsm_schema, frame_kwargs, previous)
        write_elem(out, "var", var, dataset_kwargs=frame_kwargs)
        for key in ("varm", "obsp", "varp", "uns"):
            write_elem(out, key, {})
        obs_index = out["obs"][out["obs"].attrs["_index"]]
        n_duplicates, duplicates = merge._duplicate_names(hashes, obs_index)
        x, counts = numbers[_X], numbers[_COUNTS]
        summary = MergeSummary(
            samples=tuple(
                SampleSummary(e.label, e.source, e.n_obs, e.matrix(_X).nnz, e.matrix(_X).total)
                for e in entries
            ),
            n_obs=obs_index.shape[0],
            n_vars=len(genes),
            nnz=x[0],
            x_sum=x[1],
            x_checksum=x[2],
            counts_nnz=counts[0],
            counts_sum=counts[1],
            counts_checksum=counts[2],
            median_total_counts=float(np.median(totals)) if n_obs else 0.0,
            n_duplicate_obs_names=n_duplicates,
            duplicate_obs_names=duplicates,
        )
        manifest.summary = asdict(summary)
        out.attrs[MANIFEST_ATTR] = manifest.to_json()
        merged = folder.with_name(folder.name.removesuffix(PARTS_SUFFIX))
        out.attrs[README_ATTR] = (
            f"Merged view written by sc_assets.core.incremental: the matrices' bytes are in "
            f"the files of {folder} (absolute paths). If reading fails with 'unable to open "
            "external raw data file' or 'truncated file', a part is missing or damaged: "
            + _REBUILD.format(path=merged)
            + ". export_merged() writes a self-contained copy."
        )
    return summary


def _head(entry: _Entry, name: str, stored: h5py.Group) -> pd.DataFrame:
    rows = entry.heads.get(name)
    return read_elem(stored) if rows is None else _head_from_json(rows)


def _head_to_json(head: pd.DataFrame) -> dict | None:
    """A frame of representative rows as JSON, if it comes back exactly (dtypes, categories
    and their order, values); else None. Saves reading it from each part at every update."""
    columns = []
    for name, column in head.items():
        if isinstance(column.dtype, pd.CategoricalDtype):
            categories = column.cat.categories
            columns.append(
                [
                    name,
                    "category",
                    str(categories.dtype),
                    categories.tolist(),
                    bool(column.dtype.ordered),
                    column.cat.codes.tolist(),
                ]
            )
        else:
            columns.append([name, str(column.dtype), column.tolist()])
    rows = {"n": len(head), "columns": columns}
    try:
        rows = json.loads(json.dumps(rows))
        rebuilt = _head_from_json(rows)
    except (TypeError, ValueError):
        return None
    same = list(rebuilt.columns) == list(head.columns) and rebuilt.equals(head)
    for name, column in head.items():
        same = same and rebuilt[name].dtype == column.dtype
        if isinstance(column.dtype, pd.CategoricalDtype):
            before, after = column.cat.categories, rebuilt[name].cat.categories
            same = same and after.equals(before) and after.dtype == before.dtype
    return rows if same else None


def _head_from_json(rows: dict) -> pd.DataFrame:
    columns = {}
    for name, kind, *rest in rows["columns"]:
        if kind == "category":
            categories_dtype, categories, ordered, codes = rest
            dtype = pd.CategoricalDtype(pd.Index(categories, dtype=categories_dtype), ordered)
            columns[name] = pd.Categorical.from_codes(codes, dtype=dtype)
        else:
            columns[name] = pd.array(rest[0], dtype=kind)
    return pd.DataFrame(columns, index=pd.RangeIndex(rows["n"]), columns=list(columns))


def _write_matrix_view(
    out: h5py.File, key: str, manifest: _Manifest, folder: Path, local_indptr: list[np.ndarray]
) -> tuple[int, float, str]:
    """``key``'s CSR group in the view; returns nnz, sum and checksum as merge_h5ad's."""
    entries = manifest.entries
    n_obs = sum(e.n_obs for e in entries)
    dtype = np.dtype(manifest.dtypes[key])
    index_dtype = np.dtype(manifest.index_dtypes[key])
    group = out.require_group(key)
    group.attrs["encoding-type"] = "csr_matrix"
    group.attrs["encoding-version"] = "0.1.0"
    group.attrs["shape"] = (n_obs, manifest.n_vars)
    matrices = [e.matrix(key) for e in entries]
    nnz = sum(m.nnz for m in matrices)
    crcs = {}
    for name, kind in (("data", dtype), ("indices", index_dtype)):
        segments = [
            (str(folder / e.part), *getattr(m, name)[:2])
            for e, m in zip(entries, matrices, strict=True)
        ]
        segments = [segment for segment in segments if segment[2]]
        if segments:
            group.create_dataset(name, shape=(nnz,), dtype=kind, external=segments)
        else:
            group.create_dataset(name, shape=(0,), dtype=kind)
        crc = 0
        for m in matrices:
            _, length, part_crc = getattr(m, name)
            crc = isal_zlib.crc32_combine(crc, part_crc, length)
        crcs[name] = crc

    # indptr: the real values in _indptr, read through a virtual dataset that also maps each
    # part's indptr[0] (0, like the view's) onto element 0: the canary that opens every part
    # as an HDF5 file whenever indptr is read (see the module docstring).
    indptr = np.empty(n_obs + 1, dtype=index_dtype)
    indptr[0], row, offset = 0, 0, 0
    for entry, m, local in zip(entries, matrices, local_indptr, strict=True):
        indptr[row + 1 : row + 1 + entry.n_obs] = local[1:].astype(np.int64) + offset
        row, offset = row + entry.n_obs, offset + m.nnz
    group.create_dataset("_indptr", data=indptr)
    layout = h5py.VirtualLayout(shape=(n_obs + 1,), dtype=index_dtype)
    layout[:] = h5py.VirtualSource(".", f"{key}/_indptr", shape=(n_obs + 1,))
    for entry in entries:
        source_key = key if key in entry.matrices else _X
        canary = h5py.VirtualSource(
            f"{folder.name}/{entry.part}", f"{source_key}/indptr", shape=(entry.n_obs + 1,)
        )
        layout[0:1] = canary[0:1]
    group.create_virtual_dataset("indptr", layout, fillvalue=0)
    total = 0.0
    for m in matrices:  # in order, as merge_h5ad adds the samples' sums
        total += m.total
    checksum = f"{isal_zlib.crc32(indptr):08x}{crcs['indices']:08x}{crcs['data']:08x}"
    return nnz, total, checksum


def _write_frames(
    out: h5py.File,
    entries: list[_Entry],
    folder: Path,
    obs_schema: pd.DataFrame,
    obsm_schema: dict[str, pd.DataFrame],
    frame_kwargs: dict,
    previous: tuple[h5py.File, dict[str, int]] | None,
) -> None:
    """obs and the obsm frames as merge_h5ad writes them. The rows of a part the previous view
    already held are copied from it (categorical codes renumbered for the new categories),
    when every column keeps its encoding and dtype; the others are converted from the part."""
    write_elem(out, "obsm", {})
    frames = {"obs": (out, "obs", obs_schema, merge.LABEL_COLUMN)}
    frames |= {f"obsm/{key}": (out["obsm"], key, s, None) for key, s in obsm_schema.items()}
    writers = {}
    for name, (parent, key, schema, label) in frames.items():
        empty = schema.iloc[:0].set_axis(pd.Index([], dtype=object))
        write_elem(parent, key, empty, dataset_kwargs={"maxshape": (None,), **frame_kwargs})
        old = previous[0].get(name) if previous is not None else None
        writers[name] = _FrameWriter(out[name], len(schema.columns), old, label)
    for code, entry in enumerate(entries):
        start = previous[1].get(entry.part) if previous is not None else None
        part = names = None
        for name, (_, _, schema, label) in frames.items():
            writer = writers[name]
            if start is not None and writer.plan is not None:
                writer.reuse(start, entry.n_obs, code)
                continue
            if part is None:
                part = h5py.File(folder / entry.part, "r")
                obs = read_elem(part["obs"])
                names = pd.Index([f"{entry.label}-{b}" for b in obs.index], dtype=object)
            frame = obs if name == "obs" else merge._frame_columns(part[name], entry.n_obs)
            code_arg = code if label else None
            writer.add(merge._converted_frame(frame, schema, names, label_code=code_arg))
        if part is not None:
            part.close()
    for writer in writers.values():
        writer.flush()


class _FrameWriter:
    """Appends rows to a resizable data frame group: converted frames (merge._ObsAppender) or
    runs of rows of the previous view's frame, in the order given."""

    def __init__(self, group: h5py.Group, n_columns: int, old: h5py.Group | None, label):
        self.group = group
        self.appender = merge._ObsAppender(group, n_columns)
        self.old = old
        self.plan = None if old is None else _reuse_plan(group, old, label)
        self._run: list | None = None  # [old start, old stop, [(label code, rows), ...]]

    def add(self, frame: pd.DataFrame) -> None:
        self._flush_run()
        self.appender.add(frame)

    def reuse(self, start: int, n_rows: int, code: int) -> None:
        if self._run is not None and self._run[1] == start:
            self._run[1] += n_rows
            self._run[2].append((code, n_rows))
            return
        self._flush_run()
        self._run = [start, start + n_rows, [(code, n_rows)]]

    def flush(self) -> None:
        self._flush_run()
        self.appender.flush()

    def _flush_run(self) -> None:
        if self._run is None:
            return
        self.appender.flush()  # what was added before the run goes first
        (start, stop, codes), self._run = self._run, None
        for path, (how, arg) in self.plan.items():
            target = self.group[path]
            if how == "label":
                values = np.repeat([c for c, _ in codes], [n for _, n in codes])
            else:
                values = self.old[path][start:stop]
                if how == "remap":
                    values = _renumbered(values, arg)
            first = target.shape[0]
            target.resize(first + len(values), axis=0)
            if len(values):
                target[first:] = values.astype(target.dtype, copy=False)


def _reuse_plan(new: h5py.Group, old: h5py.Group, label: str | None) -> dict | None:
    """How each per-row dataset of the frame ``new`` is filled from ``old``'s rows:
    ``("copy", None)``, ``("remap", new code of each old code)`` or ``("label", None)``; None
    when a column's encoding or dtype differs (the rows are then converted from the parts)."""
    index = new.attrs["_index"]
    if old.attrs.get("encoding-type") != "dataframe" or old.attrs.get("_index") != index:
        return None
    plan = {index: ("copy", None)}
    for column in new.attrs["column-order"]:
        element, before = new[column], old.get(column)
        if column == label:
            plan[f"{column}/codes"] = ("label", None)
            continue
        if before is None or before.attrs.get("encoding-type") != element.attrs.get(
            "encoding-type"
        ):
            return None
        if isinstance(element, h5py.Dataset):
            if not isinstance(before, h5py.Dataset) or before.dtype != element.dtype:
                return None
            plan[column] = ("copy", None)
        elif element.attrs["encoding-type"] == "categorical":
            if bool(element.attrs["ordered"]) != bool(before.attrs["ordered"]):
                return None
            categories = pd.Index(read_elem(element["categories"]))
            old_categories = pd.Index(read_elem(before["categories"]))
            if categories.dtype != old_categories.dtype:
                return None
            plan[f"{column}/codes"] = ("remap", categories.get_indexer(old_categories))
        else:  # nullable arrays: values and mask
            children = set(element)
            if children != set(before) or any(
                element[c].dtype != before[c].dtype for c in children
            ):
                return None
            plan |= {f"{column}/{c}": ("copy", None) for c in children}
    return plan


def _renumbered(codes: np.ndarray, new_code: np.ndarray) -> np.ndarray:
    result = np.where(codes >= 0, new_code[np.maximum(codes, 0)], -1)
    if np.any((codes >= 0) & (result < 0)):  # a reused part's categories are always kept
        raise RuntimeError("internal error: a category of a kept sample is not in the merge")
    return result


# ---------------------------------------------------------------------------------------------
# Reading, checking, exporting
# ---------------------------------------------------------------------------------------------


def verify_merged(out_path: str | os.PathLike[str], *, deep: bool = False) -> VerifyReport:
    """Check that everything the merged file at ``out_path`` relies on is as it was written.

    For a view: its parts are where it points, each of the recorded size and modification
    time and an HDF5 file that opens; with ``deep=True`` also the CRC-32 of every segment of
    bytes the view reads (reads all the matrices: about the time of reading the file). A
    self-contained file (``merge_h5ad``'s) is only opened. Never raises for a damaged file:
    see :meth:`VerifyReport.raise_if_broken`.
    """
    out_path = Path(out_path).absolute()
    if not out_path.is_file():
        return VerifyReport(str(out_path), "view", None, (f"{out_path} does not exist",), 0, deep)
    try:
        manifest = _read_manifest(out_path)
    except (ValueError, KeyError, TypeError) as error:
        return VerifyReport(
            str(out_path), "view", None, (f"unreadable manifest: {error}",), 0, deep
        )
    if manifest is None:
        try:
            h5py.File(out_path, "r").close()
        except OSError as error:
            return VerifyReport(str(out_path), "self-contained", None, (str(error),), 0, deep)
        return VerifyReport(str(out_path), "self-contained", None, (), 0, deep)
    folder = parts_folder(out_path)
    problems = []
    if manifest.folder != str(folder):
        problems.append(
            f"the view was written for parts in {manifest.folder} and now lies next to "
            f"{folder}: run update_merged (same sources) to point it there"
        )
    for entry in manifest.entries:
        part = folder / entry.part
        what = f"part of sample {entry.label!r} ({part})"
        try:
            st = part.stat()
        except FileNotFoundError:
            problems.append(f"{what} is missing")
            continue
        if st.st_size != entry.part_size:
            problems.append(f"{what} has {st.st_size} bytes, {entry.part_size} were written")
            continue
        if st.st_mtime_ns != entry.part_mtime_ns and not deep:
            problems.append(
                f"{what} was modified after it was written (deep=True checks its bytes)"
            )
        try:
            h5py.File(part, "r").close()
        except OSError as error:
            problems.append(f"{what} does not open: {error}")
            continue
        if deep:
            for key, m in entry.matrices.items():
                for name in ("data", "indices"):
                    offset, length, crc = getattr(m, name)
                    if _file_crc(part, offset, length) != crc:
                        problems.append(f"{what}: the bytes of {key}/{name} changed")
    return VerifyReport(
        str(out_path), "view", manifest.version, tuple(problems), len(manifest.entries), deep
    )


def _file_crc(path: Path, offset: int, length: int) -> int:
    crc = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while length > 0:
            block = f.read(min(length, 1 << 24))
            if not block:
                break
            crc = isal_zlib.crc32(block, crc)
            length -= len(block)
    return crc


def read_merged(
    out_path: str | os.PathLike[str], *, backed: Literal["r"] | None = None
) -> ad.AnnData:
    """``anndata.read_h5ad(out_path, backed=...)``; if that fails, a :class:`MergedFileError`
    saying what is wrong with the parts and how to rebuild."""
    try:
        return ad.read_h5ad(out_path, backed=backed)
    except (OSError, KeyError) as error:
        report = verify_merged(out_path)
        detail = "; ".join(report.problems) or "verify_merged finds nothing wrong"
        raise MergedFileError(
            f"{out_path} cannot be read ({error}): {detail}. " + _REBUILD.format(path=out_path)
        ) from error


def export_merged(
    out_path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    compression: Compression = None,
) -> MergeSummary:
    """Write the merged data of the view ``out_path`` to ``dest`` as one self-contained file.

    That is ``merge_h5ad`` run on the parts (each an .h5ad of its own): the same file as a
    full merge of the sources. Raises :class:`MergedFileError` if the view's parts are not as
    written.
    """
    out_path = Path(out_path).absolute()
    manifest = _read_manifest(out_path)
    if manifest is None:
        raise MergedFileError(f"{out_path} is not an incremental merged view")
    verify_merged(out_path).raise_if_broken()
    folder = parts_folder(out_path)
    sources = [(e.label, folder / e.part) for e in manifest.entries]
    with _locked(folder, blocking=True, shared=True), atomic_path(dest) as tmp:
        summary = merge_h5ad(sources, tmp, compression=compression)
    paths = {e.label: e.source for e in manifest.entries}
    samples = tuple(replace(s, path=paths[s.label]) for s in summary.samples)
    return replace(summary, samples=samples)


# ---------------------------------------------------------------------------------------------
# Retired views and clean-up
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(folder: Path, *, blocking: bool, shared: bool = False) -> Iterator[None]:
    """Hold ``folder``'s lock: one merge (exclusive) or clean-up at a time (local file systems).

    Raises BlockingIOError when not ``blocking`` and someone holds it.
    """
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        fcntl.flock(fd, mode if blocking else mode | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_history(folder: Path) -> list[dict]:
    try:
        return json.loads((folder / HISTORY_NAME).read_text())
    except FileNotFoundError:
        return []


def _write_history(folder: Path, history: list[dict]) -> None:
    with atomic_path(folder / HISTORY_NAME) as tmp:
        tmp.write_text(json.dumps(history))


def _open_files(folder: Path) -> set[tuple[int, int]]:
    """(device, inode) of files open in this process (h5py) or any process (Linux /proc)
    that lie, or lay before being replaced, in ``folder`` or its parent."""
    found = set()
    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        with contextlib.suppress(Exception):
            st = os.fstat(fid.get_vfd_handle())
            found.add((st.st_dev, st.st_ino))
    prefix = str(folder.parent)
    proc = Path("/proc")
    for fd_dir in proc.glob("[0-9]*/fd") if proc.is_dir() else []:
        try:
            links = list(fd_dir.iterdir())
        except OSError:  # gone, or not ours to look at
            continue
        for link in links:
            with contextlib.suppress(OSError):
                if os.readlink(link).startswith(prefix):
                    st = os.stat(link)
                    found.add((st.st_dev, st.st_ino))
    return found


def collect_garbage(
    out_path: str | os.PathLike[str],
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    now: float | None = None,
) -> GarbageReport:
    """Remove the parts no view needs any more.

    A part is kept while the current view uses it, while a retired view that uses it was
    retired less than ``grace_seconds`` ago or is open in some process (this one's h5py files,
    every process's open files on Linux), and while it is open itself. Parts that no view
    names (left by a merge that failed) go after ``grace_seconds`` from their modification.
    Nothing is done while a merge holds the lock.
    """
    out_path = Path(out_path).absolute()
    folder = parts_folder(out_path)
    if not folder.is_dir():
        return GarbageReport()
    now = time.time() if now is None else now
    try:
        with _locked(folder, blocking=False):
            return _collect(out_path, folder, grace_seconds, now)
    except BlockingIOError:
        return GarbageReport(skipped="a merge of this file is running")


def _collect(out_path: Path, folder: Path, grace_seconds: float, now: float) -> GarbageReport:
    current = _read_manifest(out_path)
    if current is None:  # deleted by hand, or not a view: what it used is not ours to judge
        return GarbageReport(skipped=f"{out_path} is not an incremental view: nothing removed")
    keep = {e.part for e in current.entries}
    history = _read_history(folder)
    open_files = _open_files(folder)
    remaining, in_use, in_grace = [], set(), set()
    named = set()
    for version in history:
        named |= set(version["parts"])
        if tuple(version["view"]) in open_files:
            in_use |= set(version["parts"]) - keep
        elif now - version["retired_at"] < grace_seconds:
            in_grace |= set(version["parts"]) - keep
        else:
            continue
        remaining.append(version)
    removed = []
    for part in sorted(folder.glob("*.h5")):
        name = part.name
        if name in keep or name in in_use or name in in_grace:
            continue
        with contextlib.suppress(FileNotFoundError):
            st = part.stat()
            if (st.st_dev, st.st_ino) in open_files:
                in_use.add(name)
                continue
            if name not in named and now - st.st_mtime < grace_seconds:
                continue
            part.unlink()
            removed.append(name)
    if remaining != history:
        _write_history(folder, remaining)
    return GarbageReport(
        removed=tuple(removed),
        kept_in_use=tuple(sorted(in_use)),
        kept_in_grace=tuple(sorted(in_grace - in_use)),
    )
