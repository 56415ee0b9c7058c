"""IO managers: AnnData as ``.h5ad`` and gene lists as ``.txt``, on any universal-pathlib root.

Files live at ``<root>/sample_adata/<partition>.h5ad``, ``<root>/merged_adata.h5ad`` and
``<root>/reference_genes.txt``. The root is a local folder by default and may be an object
store URL: storage is a deployment choice, not a code change. Writes are atomic: a local file is
written under a temporary name in the same folder and renamed; an object-store file is uploaded
only once it is complete.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
from dagster import (
    AssetKey,
    ConfigurableIOManagerFactory,
    InputContext,
    MetadataValue,
    OutputContext,
    UPathIOManager,
)
from dagster._core.storage.upath_io_manager import escape_dotdot_segments, escape_leading_slash
from upath import UPath

from sc_assets.core.atomic import atomic_path
from sc_assets.core.h5ad import estimated_h5ad_bytes, write_h5ad

#: ``AssetIn(metadata={LOAD_AS_PATH: True})`` makes the h5ad IO manager hand over a mapping of
#: partition key -> path instead of loading AnnData objects (the out-of-core merge reads the
#: files itself).
LOAD_AS_PATH = "sc_assets/load_as_path"


@dataclass
class DeferredH5ad:
    """An ``.h5ad`` produced by a function that writes it, instead of an in-memory AnnData.

    Return it from an asset whose result does not fit in memory: the IO manager calls
    ``write(path, compression)`` with a temporary path and its compression setting, moves the
    finished file into place, keeps what ``write`` returned in ``result`` (for the asset to use
    once the output is stored) and adds ``describe(result)`` to the output metadata.
    """

    write: Callable[[Path, str | None], Any]
    describe: Callable[[Any], Mapping[str, Any]] = lambda result: {}
    size_hint: int | None = None
    """About the bytes ``write`` writes uncompressed, to refuse early when they do not fit."""
    write_in_place: Callable[[Path, str | None], Any] | None = None
    """On local storage, called instead of ``write`` with the final path: for a writer that
    replaces the file atomically itself and keeps files beside it (the incremental merge)."""
    result: Any = field(default=None, init=False)


class StudyUPathIOManager(UPathIOManager):
    """Files named after the asset's name within its study: the base path is the study's
    storage folder, so ``pbmc/sample_adata`` is ``<base>/sample_adata/<partition>.h5ad``, as
    the default study's ``sample_adata`` is."""

    def get_asset_relative_path(self, context: InputContext | OutputContext) -> UPath:
        return UPath(context.asset_key.path[-1])


class H5adIOManager(StudyUPathIOManager):
    """Stores ``anndata.AnnData`` (or a :class:`DeferredH5ad`) as ``.h5ad`` files."""

    extension = ".h5ad"

    def __init__(self, base_path: UPath, compression: str | None = None) -> None:
        super().__init__(base_path=base_path)
        self.compression = compression

    def make_safe_partition_path(self, base_path: UPath, partition: str) -> UPath:
        # Partition keys are validated names already; escape anyway so that no key can ever
        # address a file outside the asset's folder.
        return base_path / escape_dotdot_segments(escape_leading_slash(partition))

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        if not isinstance(obj, (ad.AnnData, DeferredH5ad)):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: expected AnnData or DeferredH5ad, "
                f"got {type(obj).__name__}"
            )
        context.add_output_metadata(self._write(obj, path))

    def partition_path(self, asset_key: AssetKey, partition: str) -> UPath:
        """Where a partition of ``asset_key`` is stored (the path handle_output uses)."""
        asset_path = self._base_path / asset_key.path[-1]
        return self._with_extension(self.make_safe_partition_path(asset_path, partition))

    def store_partition(
        self, asset_key: AssetKey, partition: str, adata: ad.AnnData
    ) -> dict[str, Any]:
        """Store one partition of a run of several, as handle_output stores a single one.

        Dagster's UPathIOManager stores only single-partition outputs; an asset that builds
        several partitions in one run calls this for each. Returns the metadata
        handle_output would add (``path``, ``bytes``).
        """
        path = self.partition_path(asset_key, partition)
        self.make_directory(path.parent)
        return {"path": MetadataValue.path(str(path)), **self._write(adata, path)}

    def _write(self, obj: ad.AnnData | DeferredH5ad, path: UPath) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        if isinstance(obj, DeferredH5ad) and obj.write_in_place is not None and is_local(path):
            obj.result = obj.write_in_place(Path(path.path), self.compression)
            return dict(obj.describe(obj.result))
        size_hint = None
        if not self.compression:  # compressed, a file is smaller: a full disk shows while writing
            deferred = isinstance(obj, DeferredH5ad)
            size_hint = obj.size_hint if deferred else estimated_h5ad_bytes(obj)
        with staged_write(path, size_hint=size_hint) as tmp:
            if isinstance(obj, DeferredH5ad):
                obj.result = obj.write(tmp, self.compression)
                metadata.update(obj.describe(obj.result))
            else:  # layers["counts"] equal to X is stored once, as a link (see write_h5ad)
                write_h5ad(obj, tmp, compression=self.compression)
            metadata["bytes"] = MetadataValue.int(tmp.stat().st_size)
        return metadata

    def load_partitions(self, context: InputContext) -> Any:
        if (context.definition_metadata or {}).get(LOAD_AS_PATH):
            # Always a mapping, also for a single partition (the base class would return the
            # bare value then): partition key -> path, whether the file exists or not.
            return self._get_paths_for_partitions(context)
        return super().load_partitions(context)

    def load_from_path(self, context: InputContext, path: UPath) -> Any:
        if is_local(path):
            return ad.read_h5ad(path.path)
        with path.open("rb") as f:
            return ad.read_h5ad(f)


class GeneListIOManager(StudyUPathIOManager):
    """Stores a list of gene symbols as a text file, one per line (readable, diffable)."""

    extension = ".txt"

    def dump_to_path(self, context: OutputContext, obj: list[str], path: UPath) -> None:
        with staged_write(path) as tmp:
            tmp.write_text("".join(f"{gene}\n" for gene in obj), encoding="utf-8")

    def load_from_path(self, context: InputContext, path: UPath) -> list[str]:
        return path.read_text(encoding="utf-8").splitlines()


@contextlib.contextmanager
def staged_write(path: UPath, *, size_hint: int | None = None) -> Iterator[Path]:
    """A local temporary path whose content replaces ``path`` atomically once complete.

    On local storage, ``size_hint`` bytes must be free first (see
    :func:`sc_assets.core.atomic.atomic_path`): a sample that cannot fit fails before it
    writes, with one line naming the folder and the sizes.
    """
    if is_local(path):
        with atomic_path(path.path, size_hint=size_hint) as tmp:
            yield tmp
        return
    with tempfile.TemporaryDirectory(prefix="sc-assets-") as folder:
        tmp = Path(folder) / path.name
        yield tmp
        # Object stores publish an object only when its upload completes.
        path.fs.put_file(os.fspath(tmp), path.path)


@contextlib.contextmanager
def staged_reads(paths: Mapping[str, UPath]) -> Iterator[dict[str, Path]]:
    """Local paths of ``paths`` (key -> file) for readers that need a local file, like HDF5.

    Local files are used where they are. Object-store files are downloaded into one
    temporary folder (``TMPDIR``: a worker's scratch disk), a few at a time, and removed on
    exit. Downloading beats opening them remotely for the out-of-core merge: it reads each
    file several times in many small HDF5 reads, which on an object store are one HTTP range
    request each.
    """
    remote = {key: path for key, path in paths.items() if not is_local(path)}
    local = {key: Path(path.path) for key, path in paths.items() if is_local(path)}
    if not remote:
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="sc-assets-stage-") as folder:
        staged = {
            key: Path(folder) / f"{index}{path.suffix}"
            for index, (key, path) in enumerate(remote.items())
        }
        with concurrent.futures.ThreadPoolExecutor(max_workers=_DOWNLOADS) as pool:
            list(
                pool.map(
                    lambda key: remote[key].fs.get_file(remote[key].path, os.fspath(staged[key])),
                    remote,
                )
            )
        yield {key: local[key] if key in local else staged[key] for key in paths}


#: Files downloaded at once by :func:`staged_reads` (network-bound: more than the cores).
_DOWNLOADS = 4


def is_local(path: UPath) -> bool:
    """Whether ``path`` is on the local filesystem (not an object store)."""
    return path.protocol in ("", "file", "local")


class H5adIOManagerFactory(ConfigurableIOManagerFactory):
    """``.h5ad`` storage under ``base_dir`` (a folder or an object-store URL)."""

    base_dir: str
    compression: str = "none"

    def create_io_manager(self, context) -> H5adIOManager:
        compression = None if self.compression == "none" else self.compression
        return H5adIOManager(UPath(self.base_dir), compression=compression)


class GeneListIOManagerFactory(ConfigurableIOManagerFactory):
    """Gene-list storage under ``base_dir`` (a folder or an object-store URL)."""

    base_dir: str

    def create_io_manager(self, context) -> GeneListIOManager:
        return GeneListIOManager(base_path=UPath(self.base_dir))
