"""The inbox of a study: what changed since the last look, and the content hash of a file.

What a study holds is found by :mod:`sc_assets.core.discovery` (re-exported here); this module
compares one listing with the last one. Pure file-system logic shared by the CLI's ingest,
the sensor and the nightly schedule.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from sc_assets.core.discovery import (
    IgnoredFile,
    InboxScan,
    SampleInput,
    data_version,
    scan_inbox,
)

__all__ = [
    "IgnoredFile",
    "InboxChanges",
    "InboxCursor",
    "InboxScan",
    "SampleInput",
    "content_hash",
    "data_version",
    "inbox_changes",
    "scan_inbox",
]


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
    sheet_error: str = ""
    """Digest of the samplesheet's problems when it was last found invalid (reported once)."""
    failures_since: float = 0.0
    """Failed runs updated at this time (a timestamp) or later are yet to be looked at..."""
    failures_seen: tuple[str, ...] = ()
    """...but these, updated at exactly that time, were."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "high_water_ns": self.high_water_ns,
                "at_high_water": list(self.at_high_water),
                "settling": self.settling,
                "missing": list(self.missing),
                "sheet_error": self.sheet_error,
                "failures_since": self.failures_since,
                "failures_seen": list(self.failures_seen),
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
            sheet_error=str(data.get("sheet_error", "")),
            failures_since=float(data.get("failures_since", 0.0)),
            failures_seen=tuple(data.get("failures_seen", ())),
        )


@dataclass(frozen=True)
class InboxChanges:
    """What changed in the inbox since the cursor, and the cursor to keep."""

    ready: list[SampleInput]
    """New or changed samples whose files stopped changing: ingest them."""
    settling: list[SampleInput]
    """New or changed files still being written: look again next time."""
    deferred: list[SampleInput]
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

    ready: list[SampleInput] = []
    settling: list[SampleInput] = []
    deferred: list[SampleInput] = []
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
            failures_since=cursor.failures_since,
            failures_seen=cursor.failures_seen,
        ),
    )
