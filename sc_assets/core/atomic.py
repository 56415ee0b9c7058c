"""Atomic file replacement: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = ".tmp"

#: Room left free beyond what a write needs: file system metadata, HDF5's own overhead.
_HEADROOM = 1 << 20


class StorageFullError(OSError):
    """No room for a file: before writing (not enough free space for its size) or while.

    ``str(error)`` is one line: ``no space left on device in <folder>: about N MB needed,
    M MB free``.
    """

    def __init__(self, folder: str | os.PathLike[str], needed: int | None, free: int) -> None:
        self.folder, self.needed, self.free = os.fspath(folder), needed, free
        size = f"about {needed / 1e6:,.0f} MB needed, " if needed else ""
        super().__init__(
            errno.ENOSPC,
            f"no space left on device in {self.folder}: {size}{free / 1e6:,.0f} MB free",
        )

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):  # keep the arguments across process boundaries
        return (StorageFullError, (self.folder, self.needed, self.free))


def is_out_of_space(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says the disk is full (h5py says it in words)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def temp_path_for(path: Path) -> Path:
    """A hidden, unique temporary name next to ``path``: ``.<name>.<pid>.<random>.tmp``.

    Same folder, so the final rename stays on one filesystem and is atomic; the pid lets
    :func:`remove_stale_temp_files` tell a crashed writer's leftovers from a live writer's file.
    """
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    The data is fsynced before the rename and the folder after it, so a crash (even SIGKILL or
    a power cut) leaves either the previous file or the complete new one. On any error the
    temporary file is removed and ``path`` is untouched. Leftovers of writers that died are
    removed first.

    With ``size_hint`` (the bytes about to be written), a folder without that much free space
    raises :class:`StorageFullError` before anything is written; a full disk while writing
    raises it too (instead of the writer's own error, e.g. pages of h5py's).

    Example
    -------
    >>> with atomic_path("out.h5ad") as tmp:  # doctest: +SKIP
    ...     adata.write_h5ad(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    if size_hint is not None:
        free = shutil.disk_usage(path.parent).free
        if free < size_hint + _HEADROOM:
            raise StorageFullError(path.parent, size_hint, free)
    tmp = temp_path_for(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if is_out_of_space(error) and not isinstance(error, StorageFullError):
            free = shutil.disk_usage(path.parent).free
            raise StorageFullError(path.parent, size_hint, free) from None
        raise
    _fsync_dir(path.parent)


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Remove temporary files left next to ``path`` by writers that are no longer running.

    Returns the removed paths. A temp file of a live process (another run writing the same
    target right now) is left alone.
    """
    removed = []
    for candidate in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
        pid = _pid_of(candidate, path)
        if pid is not None and not _process_alive(pid):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _pid_of(candidate: Path, target: Path) -> int | None:
    middle = candidate.name[len(target.name) + 2 : -len(TEMP_SUFFIX)]  # "<pid>.<random>"
    pid, _, _ = middle.partition(".")
    return int(pid) if pid.isdigit() else None


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
