"""Inputs in object storage: a local mirror of a remote study, one download per object version.

Discovery and the readers work on local files (a layout is detected from a file's first
bytes, HDF5 needs a file, the CSV parser streams one). A data folder or samplesheet given as a
URL (``s3://bucket/prefix``, any fsspec protocol) is therefore mirrored into a local cache
folder before it is looked at:

* one listing of the prefix per look (one request per 1,000 objects), which gives every
  object's size, ETag and LastModified;
* an object is downloaded only when its ETag or size differs from what its copy was made
  from; the copy is written under another name and renamed into place, with the object's
  LastModified as its modification time. So a copy's inode change time moves exactly when the
  object's ETag does: the sensor's cursor (inode change times, sizes, mtimes) follows the
  objects' ETags and sizes without knowing about them;
* an object that is gone is removed from a full mirror, as a deleted local file would be.

The cache lives under ``$TMPDIR/sc-assets-inputs`` (a worker's scratch disk), one folder per
URL: ``<cache>/<protocol>/<bucket>/<prefix>``. One process syncs a mirror at a time (a file
lock); readers of a copy that is replaced keep reading the version they opened.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from upath import UPath

#: The folder, under the temporary directory, that holds the mirrors.
CACHE_NAME = "sc-assets-inputs"


def is_url(location: str | os.PathLike[str] | None) -> bool:
    """Whether ``location`` names an object store (``s3://...``) rather than a local path."""
    if location is None:
        return False
    text = os.fspath(location) if not isinstance(location, UPath) else str(location)
    return "://" in text and not text.startswith("file://")


def location(value: str) -> Path | UPath:
    """A setting's path: a URL as a :class:`upath.UPath`, a local path made absolute."""
    return UPath(value) if is_url(value) else Path(value).absolute()


@dataclass(frozen=True)
class RemoteObject:
    """One object under a mirrored prefix, as one listing saw it."""

    relative: str
    """Its key below the prefix, with ``/`` between folders."""
    size: int
    etag: str
    mtime_ns: int


class Mirror:
    """The local copy of everything under one URL."""

    def __init__(self, url: str, cache: Path | None = None) -> None:
        self.url = str(url).rstrip("/")
        remote = UPath(self.url)
        self.fs = remote.fs
        self.root = remote.path.rstrip("/")
        cache = cache or Path(tempfile.gettempdir()) / CACHE_NAME
        self.folder = cache / remote.protocol / self.root
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self._state = cache / ".state" / digest
        """The manifest (relative key -> ETag of the copy), the lock and partial downloads:
        beside the mirror, never in it, so a scan of the mirror never sees them."""

    def list(self) -> dict[str, RemoteObject]:
        """Every object under the URL (one paginated listing)."""
        found = self.fs.find(self.root, detail=True, withdirs=False)
        objects = {}
        for key, info in found.items():
            relative = key[len(self.root) :].lstrip("/")
            if not relative or info.get("type") == "directory":
                continue
            objects[relative] = RemoteObject(
                relative,
                int(info.get("size") or 0),
                str(info.get("ETag") or info.get("etag") or info.get("md5") or ""),
                _mtime_ns(info),
            )
        return objects

    def sync(self, keep: Callable[[str], bool] | None = None) -> Path:
        """Bring the mirror up to date with the URL and return its local folder.

        ``keep(relative)`` limits the sync to some objects (a worker fetching one sample):
        then nothing else is downloaded or removed.
        """
        with self._locked():
            objects = self.list()
            manifest = self._manifest()
            for relative, obj in objects.items():
                if keep is not None and not keep(relative):
                    continue
                copy = self.folder / relative
                if manifest.get(relative) == obj.etag and _size(copy) == obj.size:
                    continue
                self._download(obj, copy)
                manifest[relative] = obj.etag
            if keep is None:
                for relative in set(manifest) - set(objects):
                    with contextlib.suppress(FileNotFoundError):
                        (self.folder / relative).unlink()
                    del manifest[relative]
                _remove_empty_folders(self.folder)
            self._save(manifest)
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder

    def local(self, url: str) -> Path:
        """Where the copy of ``url`` (under this mirror's URL) is."""
        relative = str(url).rstrip("/")[len(self.url) :].lstrip("/")
        return self.folder / relative if relative else self.folder

    def _download(self, obj: RemoteObject, copy: Path) -> None:
        partial = self._state / "partial"
        partial.mkdir(parents=True, exist_ok=True)
        copy.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=partial)
        os.close(fd)
        try:
            self.fs.get_file(f"{self.root}/{obj.relative}", tmp)
            if obj.mtime_ns:
                os.utime(tmp, ns=(obj.mtime_ns, obj.mtime_ns))
            os.replace(tmp, copy)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _manifest(self) -> dict[str, str]:
        try:
            return json.loads((self._state / "manifest.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save(self, manifest: dict[str, str]) -> None:
        path = self._state / "manifest.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, sort_keys=True))
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._state.mkdir(parents=True, exist_ok=True)
        with open(self._state / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def local_study(
    data_dir: str | os.PathLike[str],
    samplesheet: str | os.PathLike[str] | None,
    sample: str | None = None,
    *,
    sheet_name: str = "samplesheet.csv",
) -> tuple[Path, Path | None]:
    """The study's data folder and samplesheet as local paths, mirroring what is remote.

    A samplesheet's rows are relative to its folder, so a remote samplesheet brings its whole
    folder. A remote data folder is mirrored whole, or, for one ``sample`` of a scanned
    folder, only the entries whose names start with the sample's name (a worker ingesting
    one sample downloads that sample); a folder with a samplesheet is always mirrored whole
    (the sheet is validated as a whole).
    """
    if is_url(samplesheet):
        sheet = str(samplesheet)
        mirror = Mirror(sheet.rsplit("/", 1)[0])
        mirror.sync()
        return mirror.folder, mirror.local(sheet)
    sheet_path = Path(samplesheet) if samplesheet else None
    if not is_url(data_dir):
        return Path(data_dir), sheet_path
    mirror = Mirror(str(data_dir))
    if sample is None or sheet_path is not None:
        return mirror.sync(), sheet_path
    folder = mirror.sync(keep=lambda relative: relative.startswith((sample, sheet_name)))
    if (folder / sheet_name).is_file():
        folder = mirror.sync()
    return folder, sheet_path


def origin(path: str | os.PathLike[str]) -> str:
    """Where a file came from: ``s3://bucket/key`` for a copy in a mirror, else the path."""
    path = Path(path)
    cache = Path(tempfile.gettempdir()) / CACHE_NAME
    try:
        protocol, *rest = path.relative_to(cache).parts
    except ValueError:
        return str(path)
    return f"{protocol}://{'/'.join(rest)}" if rest and protocol != ".state" else str(path)


def _mtime_ns(info: dict) -> int:
    modified = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if modified is None:
        return 0
    if hasattr(modified, "timestamp"):
        return int(modified.timestamp() * 1e9)
    return int(float(modified) * 1e9)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _remove_empty_folders(folder: Path) -> None:
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


__all__ = ["Mirror", "RemoteObject", "is_url", "local_study", "location", "origin"]
