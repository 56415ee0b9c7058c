"""Compiled loops, loaded on first use, and the threads that run them.

The QC sums and the HDF5 readers' checks are numba loops in modules that every process
imports, including those that only look at inputs (the Dagster code server, sensors, merge
runs), which never run them: :func:`compiled` imports numba (0.3 s) and loads a loop when it is
first called, not when its module is imported. Modules imported only to run their loops (the
MTX entries, the CSV parser, the writers) decorate them with numba as usual.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any


@functools.cache
def compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` compiled by numba, GIL released, from its cache on disk after the first
    compilation (``__pycache__``)."""
    import numba

    return numba.njit(function, nogil=True, cache=True)


def workers() -> int:
    """Threads worth starting for a pass over a matrix: one per core, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, cores or 1)
