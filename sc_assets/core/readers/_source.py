"""What every reader module shares: the layouts, a detected input, the options of a read."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sc_assets.core.readers._contract import CountData
    from sc_assets.core.samples import SampleSpec

#: Layout names, as a samplesheet's ``format`` column gives them (besides ``auto``).
FORMATS = ("csv", "tsv", "10x_h5", "10x_mtx", "starsolo", "h5ad")

#: Layouts that are also another: STARsolo's output is a 10x MTX folder.
_ALSO = {"starsolo": "10x_mtx"}

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
#: Bytes of a file read to detect its layout.
HEAD_BYTES = 4096


def format_matches(format: str, layout: str) -> bool:
    """Whether a detected ``layout`` is what a samplesheet's ``format`` asks for."""
    return format in ("auto", layout, _ALSO.get(layout))


@dataclass(frozen=True)
class ReadOptions:
    """How to read an input, where its layout leaves a choice (a samplesheet's columns)."""

    orientation: str = "genes_x_cells"
    counts_layer: str | None = None
    genome: str | None = None

    @classmethod
    def of(cls, spec: SampleSpec) -> ReadOptions:
        return cls(spec.orientation, spec.counts_layer, spec.genome)


@dataclass(frozen=True)
class Source:
    """A detected input: its layout and the files its counts are read from."""

    layout: str
    """One of :data:`FORMATS`."""
    path: Path
    """The input as named (a file or a folder)."""
    files: Mapping[str, Path]
    """Role -> file, e.g. ``{"matrix": ..., "features": ..., "barcodes": ...}``; every file
    the sample's data comes from (what the sensor watches and the data version hashes)."""
    detail: str
    """What was recognised, for messages, e.g. ``"a Cell Ranger 3 HDF5 file"``."""
    extra: Mapping[str, object] = field(default_factory=dict)
    """Whatever the reader found out while detecting (e.g. the separator of a text file)."""


class Reader(Protocol):
    """A reader module (see ``sc_assets.core.readers``)."""

    LAYOUTS: tuple[str, ...]

    def detect(self, path: Path, head: bytes) -> Source | None:
        """The source if ``path`` is in one of this module's layouts, else None.

        ``head`` is the first :data:`HEAD_BYTES` bytes of a file (decompressed when the file is
        gzip), ``b""`` for a folder. Never raises for an input of another layout.
        """

    def read(self, source: Source, options: ReadOptions) -> CountData:
        """The counts, barcodes and features of ``source``; CountMatrixError if malformed."""

    def read_gene_names(self, source: Source, options: ReadOptions) -> list[str]:
        """The gene symbols of the Gene Expression features in matrix order (duplicates kept)."""


def read_head(path: Path) -> bytes:
    """The first bytes of a file, decompressed when it is gzip; ``b""`` for a folder."""
    if path.is_dir():
        return b""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if head.startswith(GZIP_MAGIC):
        try:
            return zlib.decompressobj(wbits=31).decompress(head, HEAD_BYTES)
        except zlib.error:
            return head
    return head


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def describe_input(path: Path, head: bytes) -> str:
    """What ``path`` looks like, for the error about an input no reader recognised."""
    if path.is_dir():
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
        if not names:
            return "an empty folder"
        shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        return f"a folder holding {shown}"
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with open(path, "rb") as f:
        raw = f.read(16)
    if raw.startswith(GZIP_MAGIC) and head.startswith(HDF5_MAGIC):
        return "a gzip-compressed HDF5 file: decompress it first (gunzip)"
    if head.startswith(HDF5_MAGIC):
        return _describe_hdf5(path)
    if (
        raw.startswith(b"X\n")
        or raw.startswith(b"RDX")
        or (raw.startswith(GZIP_MAGIC) and head.startswith((b"X\n", b"RDX")))
    ):
        return "an R data file (.rds/.RData): export the counts from R (e.g. as 10x MTX)"
    if raw.startswith(GZIP_MAGIC) and head.startswith(GZIP_MAGIC):
        return "a gzip file that does not decompress"
    if raw.startswith(b"PK\x03\x04"):
        return "a zip archive: unpack it first"
    if _is_text(head):
        first = head.split(b"\n", 1)[0][:60].decode("utf-8", "replace")
        return f"text starting with {first!r}"
    return f"binary data starting with bytes {raw[:8].hex(' ')}"


def _describe_hdf5(path: Path) -> str:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            keys = sorted(f.keys())
    except OSError as error:
        return f"an HDF5 file that cannot be opened ({error}): truncated or damaged?"
    if {"matrix", "row_attrs", "col_attrs"} <= set(keys):
        return "a loom file (not supported: convert it with anndata.read_loom(...).write_h5ad())"
    shown = ", ".join(keys[:12]) or "nothing"
    return f"an HDF5 file holding {shown}, neither Cell Ranger's nor AnnData's layout"


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # not just a character cut at the end of the head
            return False
    return b"\x00" not in head
