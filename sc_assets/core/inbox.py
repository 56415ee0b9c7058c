"""The input folder ("inbox") where per-sample files land: what is there, and what changed.

Pure file-system logic shared by the CLI's ingest, the sensor and the nightly schedule.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sc_assets.core.errors import SampleNameError
from sc_assets.core.names import parse_sample_name


@dataclass(frozen=True)
class SampleFile:
    """A valid per-sample file as seen by one scan."""

    partition_key: str
    path: Path
    size: int
    mtime_ns: int
    ctime_ns: int
    """Inode change time: set on create, copy, rename and replace, and not settable by users,
    so it reveals a file dropped in with a preserved (old) modification time."""

    @property
    def signature(self) -> str:
        """Cheap identity of the file's current version: ``<size>-<mtime_ns>``."""
        return f"{self.size}-{self.mtime_ns}"


@dataclass(frozen=True)
class IgnoredFile:
    """A file in the inbox that is not a sample file."""

    name: str
    reason: str
    ctime_ns: int


@dataclass(frozen=True)
class InboxScan:
    """One listing of the inbox."""

    samples: dict[str, SampleFile]
    """Partition key -> file, for every file with a valid sample name."""
    ignored: dict[str, IgnoredFile]
    """File name -> a file that is not a sample (bad name, partial download...)."""


def scan_inbox(data_dir: str | os.PathLike[str]) -> InboxScan:
    """List ``data_dir``: valid sample files with their stat, and the names that are not.

    Hidden files (``.name``, e.g. temporary files of a copy in progress) and folders are
    skipped silently; anything else that is not a valid sample name is listed in ``ignored``.
    One ``scandir`` and one ``stat`` per file: 10,000 files take a few tens of milliseconds.
    """
    samples: dict[str, SampleFile] = {}
    ignored: dict[str, IgnoredFile] = {}
    with os.scandir(data_dir) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except FileNotFoundError:  # removed between listing and stat
                continue
            try:
                sample = parse_sample_name(entry.name)
            except SampleNameError as error:
                ignored[entry.name] = IgnoredFile(entry.name, str(error), stat.st_ctime_ns)
                continue
            samples[sample.partition_key] = SampleFile(
                partition_key=sample.partition_key,
                path=Path(entry.path),
                size=stat.st_size,
                mtime_ns=stat.st_mtime_ns,
                ctime_ns=stat.st_ctime_ns,
            )
    return InboxScan(samples=dict(sorted(samples.items())), ignored=dict(sorted(ignored.items())))


def content_hash(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of the file's bytes (hex): the data version of a raw count matrix."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class InboxCursor:
    """What a watcher of the inbox remembers between two looks; small and JSON-serialisable.

    Only files that changed since the last look are examined again, so the state does not
    grow with the number of samples: a high-water mark of inode change times, the keys
    already handled at exactly that mark, files still settling, and sources reported missing.
    """

    high_water_ns: int = 0
    at_high_water: tuple[str, ...] = ()
    settling: dict[str, str] = field(default_factory=dict)
    """Partition key -> signature seen last time, for files not yet ready."""
    missing: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "high_water_ns": self.high_water_ns,
                "at_high_water": list(self.at_high_water),
                "settling": self.settling,
                "missing": list(self.missing),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> InboxCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            high_water_ns=int(data.get("high_water_ns", 0)),
            at_high_water=tuple(data.get("at_high_water", ())),
            settling=dict(data.get("settling", {})),
            missing=tuple(data.get("missing", ())),
        )


@dataclass(frozen=True)
class InboxChanges:
    """What changed in the inbox since the cursor, and the cursor to keep."""

    ready: list[SampleFile]
    """New or changed files whose size and time stopped changing: ingest them."""
    settling: list[SampleFile]
    """New or changed files still being written: look again next time."""
    deferred: list[SampleFile]
    """Ready files beyond ``max_ready``: released by the next looks."""
    new_ignored: list[IgnoredFile]
    """Files with invalid names that appeared since the last look (reported once)."""
    newly_missing: list[str]
    """Known partitions whose source file disappeared since the last look (reported once)."""
    cursor: InboxCursor


def inbox_changes(
    scan: InboxScan,
    cursor: InboxCursor,
    *,
    known_keys: Iterable[str],
    now_ns: int,
    settle_ns: int,
    max_ready: int | None = None,
) -> InboxChanges:
    """Compare a scan with the cursor: which files to ingest now, which to wait for.

    A file is a candidate when its inode change time is past the high-water mark (new, copied
    over, replaced, renamed into place) or it was settling. A candidate is ready when its
    signature (size, mtime) equals the one seen last time, or it was last modified more than
    ``settle_ns`` ago; otherwise it is still being written and waits. At most ``max_ready``
    files are released per call (the rest are deferred to the next looks, which is all the
    cursor holds per file), which bounds the work of one look.
    """
    handled_at_mark = set(cursor.at_high_water)

    def is_new(ctime_ns: int, name: str) -> bool:
        return ctime_ns > cursor.high_water_ns or (
            ctime_ns == cursor.high_water_ns and name not in handled_at_mark
        )

    ready: list[SampleFile] = []
    settling: list[SampleFile] = []
    deferred: list[SampleFile] = []
    for key, file in scan.samples.items():
        if not (is_new(file.ctime_ns, key) or key in cursor.settling):
            continue
        quiet = cursor.settling.get(key) == file.signature or now_ns - file.mtime_ns > settle_ns
        if not quiet:
            settling.append(file)
        elif max_ready is None or len(ready) < max_ready:
            ready.append(file)
        else:
            deferred.append(file)

    new_ignored = [f for name, f in scan.ignored.items() if is_new(f.ctime_ns, name)]
    missing = sorted(set(known_keys) - set(scan.samples))
    stamps = [(f.ctime_ns, k) for k, f in scan.samples.items()]
    stamps += [(f.ctime_ns, name) for name, f in scan.ignored.items()]
    high_water = max([cursor.high_water_ns, *(ctime for ctime, _ in stamps)])
    at_mark = sorted(name for ctime, name in stamps if ctime == high_water)
    return InboxChanges(
        ready=ready,
        settling=settling,
        deferred=deferred,
        new_ignored=new_ignored,
        newly_missing=[key for key in missing if key not in set(cursor.missing)],
        cursor=InboxCursor(
            high_water_ns=high_water,
            at_high_water=tuple(at_mark),
            settling={f.partition_key: f.signature for f in [*settling, *deferred]},
            missing=tuple(missing),
        ),
    )
