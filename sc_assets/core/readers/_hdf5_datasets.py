"""One 1-D HDF5 dataset into an array, on all cores, its value range taken on the way.

Why not just h5py
-----------------
Cell Ranger compresses ``data`` and ``indices`` with shuffle + gzip in chunks of 80,000
values, which HDF5 inflates one after the other on one core, holding the GIL. On a full-size
10x file (15.4 M values, fresh processes) h5py's ``read_direct`` of those two datasets alone
takes 0.48-0.57 s, and ``scanpy.read_10x_h5`` 0.92-0.95 s: HDF5's own zlib would leave no room
for the contract's checks and QC within scanpy's time. So the chunks are read as stored and
inflated here (ISA-L, :func:`_inflate`), unshuffled and cast on all cores at once, each chunk's
value range taken (and its copy made) while it is in cache: the whole read of such a file,
:func:`~sc_assets.core.readers.read_count_matrix`, takes 0.38-0.55 s (scanpy's 0.87-1.38 s in
the same runs). Unfiltered datasets (anndata's default) are read from the file with ``pread``
by blocks, on all cores (:func:`_pread`); any other storage goes through h5py (:func:`reader`
picks the way).

The check that values are whole numbers is a numba loop (:func:`_fractional`), compiled on first
use (:mod:`sc_assets.core._loops`): detecting a layout never loads numba.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
from isal import isal_zlib

from sc_assets.core._loops import compiled, workers

#: Values per block when a dataset is read through h5py or pread.
BLOCK = 1 << 20


@dataclass(frozen=True)
class ValueRange:
    """The smallest and largest of some stored values, and whether all are whole numbers."""

    low: float
    high: float
    whole: bool
    """False also when a value is NaN or infinite."""

    @staticmethod
    def of(values: np.ndarray) -> ValueRange:
        """The range of ``values`` (any shape and numeric dtype)."""
        if values.size == 0:
            return ValueRange(0, 0, True)
        if values.dtype.kind != "f":
            return ValueRange(values.min().item(), values.max().item(), True)
        low, high = values.min().item(), values.max().item()  # NaN if a value is
        whole = math.isfinite(low) and math.isfinite(high)
        # A numba loop: numpy's rint and comparison take two passes and two temporary arrays.
        native = values.astype(np.float64 if values.itemsize > 4 else np.float32, copy=False)
        return ValueRange(low, high, whole and not compiled(_fractional)(native.reshape(-1)))

    def __or__(self, other: ValueRange) -> ValueRange:
        if math.isnan(self.low) or math.isnan(other.low):
            return ValueRange(math.nan, math.nan, False)
        return ValueRange(
            min(self.low, other.low), max(self.high, other.high), self.whole and other.whole
        )

    @property
    def counts(self) -> bool:
        """Whether the values can be counts: whole numbers, none negative."""
        return self.whole and self.low >= 0


def _fractional(values) -> bool:
    """Whether any of ``values`` is not a whole number (NaN is not; infinities are).
    Compiled by numba, vectorized."""
    found = False
    for k in range(values.size):
        found |= values[k] != np.floor(values[k])
    return found


@contextlib.contextmanager
def reading_pool() -> Iterator[ThreadPoolExecutor | None]:
    """Threads for the functions below: one per core (at most 4), None on one core."""
    if workers() == 1:
        yield None
        return
    with ThreadPoolExecutor(workers(), thread_name_prefix="sc-assets-read") as pool:
        yield pool


def run(
    pool: ThreadPoolExecutor | None,
    job: Callable[..., Any],
    jobs: Iterable[tuple],
    fold: Callable[[Any], None],
) -> None:
    """``fold(job(*args))`` for each ``args`` in order, a few jobs at a time on ``pool``.

    ``jobs`` is taken lazily, so what it reads (compressed chunks) waits in memory only while
    a job is in flight.
    """
    if pool is None:
        for args in jobs:
            fold(job(*args))
        return
    in_flight: deque[Future] = deque()
    limit = 2 * workers()
    try:
        for args in jobs:
            if len(in_flight) >= limit:
                fold(in_flight.popleft().result())
            in_flight.append(pool.submit(job, *args))
        while in_flight:
            fold(in_flight.popleft().result())
    finally:
        for future in in_flight:  # after an error: let no job write into freed buffers
            future.cancel() or future.exception()


def submit(pool: ThreadPoolExecutor | None, job: Callable[..., Any], *args: Any) -> Future:
    """``job(*args)`` on ``pool``, or now when there is none (its error kept for
    ``result()`` as well)."""
    if pool is not None:
        return pool.submit(job, *args)
    done: Future = Future()
    try:
        done.set_result(job(*args))
    except Exception as error:
        done.set_exception(error)
    return done


#: Reads a dataset's values: ``read(out, pool, copy)`` (see :func:`reader`).
Read = Callable[[np.ndarray, "ThreadPoolExecutor | None", "np.ndarray | None"], ValueRange]


def reader(dataset: h5py.Dataset) -> Read:
    """How to read a 1-D ``dataset``, chosen from its storage (read now, from HDF5's metadata).

    ``read(out, pool, copy)`` reads the values into ``out`` (cast to its dtype), and into
    ``copy`` if given, on ``pool``; it returns the range of the stored values. Chunks filtered
    with gzip (and shuffle), as Cell Ranger writes them, are inflated here. Unfiltered values
    (anndata's default) are read from the file straight into ``out`` by blocks. Anything else
    goes through h5py by blocks, each block's range taken on the pool while h5py reads the next.
    """
    if (filters := _inflatable(dataset)) is not None:
        return functools.partial(_read_chunks, dataset, filters)
    if (runs := _stored_runs(dataset)) is not None:
        return functools.partial(_read_runs, dataset.file.filename, dataset.dtype, runs)
    return functools.partial(_read_blocks, dataset)


def _read_chunks(
    dataset: h5py.Dataset,
    filters: tuple[int, ...],
    out: np.ndarray,
    pool: ThreadPoolExecutor | None,
    copy: np.ndarray | None,
) -> ValueRange:
    """gzip-filtered chunks, read as stored and inflated on the pool."""
    chunk = dataset.chunks[0]

    def chunks() -> Iterator[tuple]:
        for start in range(0, out.size, chunk):
            mask, raw = dataset.id.read_direct_chunk((start,))  # as stored: not inflated
            stop = min(out.size, start + chunk)
            yield raw, mask, filters, dataset.dtype, chunk, *_parts(out, copy, start, stop)

    return _folded(pool, _inflate, chunks())


def _read_runs(
    filename: str,
    dtype: np.dtype,
    runs: list[tuple[int, int, int]],
    out: np.ndarray,
    pool: ThreadPoolExecutor | None,
    copy: np.ndarray | None,
) -> ValueRange:
    """Unfiltered values, read from the file with ``pread`` by blocks on the pool."""
    with open(filename, "rb", buffering=0) as file:
        blocks = (
            (file.fileno(), offset + (start - first) * dtype.itemsize, dtype)
            + _parts(out, copy, start, stop)
            for first, last, offset in runs
            for start in range(first, last, BLOCK)
            for stop in [min(last, start + BLOCK)]
        )
        return _folded(pool, _pread, blocks)


def _read_blocks(
    dataset: h5py.Dataset,
    out: np.ndarray,
    pool: ThreadPoolExecutor | None,
    copy: np.ndarray | None,
) -> ValueRange:
    """Any other storage, through h5py by blocks, each block's range taken on the pool."""

    def blocks() -> Iterator[tuple]:
        for start in range(0, out.size, BLOCK):
            stop = min(out.size, start + BLOCK)
            same = dataset.dtype == out.dtype
            target = out[start:stop] if same else np.empty(stop - start, dataset.dtype)
            dataset.read_direct(target, np.s_[start:stop])
            yield target, *_parts(out, copy, start, stop)

    return _folded(pool, _cast, blocks())


def _parts(out: np.ndarray, copy: np.ndarray | None, start: int, stop: int) -> tuple:
    return out[start:stop], None if copy is None else copy[start:stop]


def _folded(pool: ThreadPoolExecutor | None, job: Callable, jobs: Iterable[tuple]) -> ValueRange:
    """``job(*args)`` for each of ``jobs`` on ``pool``: the union of the value ranges."""
    parts: list[ValueRange] = []  # one per chunk or block: a few thousand at most
    run(pool, job, jobs, parts.append)
    return functools.reduce(operator.or_, parts or [ValueRange(0, 0, True)])


def _stored_runs(dataset: h5py.Dataset) -> list[tuple[int, int, int]] | None:
    """Where an unfiltered 1-D dataset's values lie in its file: ``(first, stop, byte offset)``
    for each run of adjacent values; None if it is filtered, or anything is unusual."""
    if dataset.ndim != 1 or dataset.dtype.kind not in "iuf" or dataset.file.userblock_size:
        return None
    n, size = dataset.shape[0], dataset.dtype.itemsize
    if dataset.chunks is None:
        offset = dataset.id.get_offset()  # None until written
        return None if offset is None else [(0, n, offset)]
    if dataset.id.get_create_plist().get_nfilters():
        return None
    chunk = dataset.chunks[0]
    stored: list[tuple[int, int, int]] = []
    dataset.id.chunk_iter(lambda c: stored.append((c.chunk_offset[0], c.byte_offset, c.size)))
    if len(stored) != -(-n // chunk) or any(length != chunk * size for _, _, length in stored):
        return None  # unwritten chunks (the fill value): leave them to HDF5
    runs: list[list[int]] = []
    for first, offset, _ in sorted(stored):
        if runs and runs[-1][1] == first and runs[-1][2] + (first - runs[-1][0]) * size == offset:
            runs[-1][1] = first + chunk
        else:
            runs.append([first, first + chunk, offset])
    return [(first, min(stop, n), offset) for first, stop, offset in runs]


def _pread(
    fd: int, offset: int, dtype: np.dtype, out: np.ndarray, copy: np.ndarray | None
) -> ValueRange:
    """Values of ``dtype`` at ``offset`` in the file into ``out`` (and ``copy``); their range."""
    target = out if out.dtype == dtype else np.empty(out.size, dtype)
    view = memoryview(target).cast("B")
    done = 0
    while done < view.nbytes:  # pread may return less than asked
        read = os.preadv(fd, [view[done:]], offset + done)
        if read == 0:
            raise OSError(f"the file ends {view.nbytes - done} bytes early: truncated")
        done += read
    return _cast(target, out, copy)


def _cast(values: np.ndarray, out: np.ndarray, copy: np.ndarray | None) -> ValueRange:
    """``values`` into ``out`` (and ``copy``), cast; their range."""
    found = ValueRange.of(values)
    if values is not out:
        out[...] = values
    if copy is not None:  # from ``out`` while it is in cache
        copy[...] = out
    return found


_SHUFFLE, _DEFLATE = h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE


def _inflatable(dataset: h5py.Dataset) -> tuple[int, ...] | None:
    """The filters of a chunked 1-D dataset if gzip, maybe after shuffle, every chunk stored.

    Uncompressed chunks are left to h5py: it copies them into place in one pass, and a job
    per chunk would cost more than the copy (anndata writes chunks of 60 kB).
    """
    if dataset.ndim != 1 or dataset.chunks is None or dataset.dtype.kind not in "iuf":
        return None
    plist = dataset.id.get_create_plist()
    codes = tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))
    if codes not in ((_DEFLATE,), (_SHUFFLE, _DEFLATE)):
        return None
    if dataset.id.get_num_chunks() != -(-dataset.shape[0] // dataset.chunks[0]):
        return None  # unwritten chunks (the fill value): leave them to HDF5
    return codes


def _inflate(
    raw: bytes,
    mask: int,
    filters: tuple[int, ...],
    dtype: np.dtype,
    chunk: int,
    out: np.ndarray,
    copy: np.ndarray | None,
) -> ValueRange:
    """Undo ``filters`` on one stored chunk (those ``mask`` says were applied), into ``out``
    (and ``copy``)."""
    applied = [code for i, code in enumerate(filters) if not mask & (1 << i)]
    buffer = isal_zlib.decompress(raw) if _DEFLATE in applied else raw
    if len(buffer) != chunk * dtype.itemsize:
        raise OSError(f"a chunk holds {len(buffer)} bytes, expected {chunk * dtype.itemsize}")
    if _SHUFFLE in applied and dtype.itemsize > 1:
        values = _unshuffled(buffer, dtype, chunk)
    else:
        values = np.frombuffer(buffer, dtype)
    return _cast(values[: out.size], out, copy)


def _unshuffled(buffer: bytes, dtype: np.dtype, chunk: int) -> np.ndarray:
    """The values of a shuffled chunk (byte k of every value stored together, for each k).

    Cell Ranger's int32 counts, and int64 indices below 2**32, are rebuilt from their four low
    byte planes with whole-array shifts: five times faster than numpy's transposed copy.
    """
    size = dtype.itemsize
    planes = np.frombuffer(buffer, np.uint8).reshape(size, chunk)
    if (
        dtype.kind not in "iu"
        or size not in (4, 8)
        or dtype.byteorder == ">"
        or (size == 8 and _any(planes[4:]))
    ):
        unshuffled = np.empty((chunk, size), np.uint8)
        unshuffled[...] = planes.T
        return unshuffled.view(dtype).reshape(chunk)
    values = planes[0].astype(np.uint32)
    shifted = np.empty(chunk, np.uint32)
    for k in (1, 2, 3):
        np.left_shift(planes[k], 8 * k, out=shifted, dtype=np.uint32)
        values |= shifted
    return values.view(np.int32) if dtype.kind == "i" and size == 4 else values


def _any(planes: np.ndarray) -> bool:
    flat = planes.reshape(-1)
    return bool((flat.view(np.uint64) if flat.size % 8 == 0 else flat).any())
