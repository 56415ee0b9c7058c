"""Plain scverse logic: names, reading, QC, validation outcomes, merging, demo data.

Nothing here imports Dagster: every function takes and returns AnnData objects, paths and
plain Python values, so it can be used from a notebook or a script as well as from the assets.
"""

from sc_assets.core.errors import CountMatrixError, SampleNameError
from sc_assets.core.names import (
    FILE_SUFFIX,
    SampleName,
    is_sample_file_name,
    parse_partition_key,
    parse_sample_name,
)

__all__ = [
    "FILE_SUFFIX",
    "CountMatrixError",
    "SampleName",
    "SampleNameError",
    "is_sample_file_name",
    "parse_partition_key",
    "parse_sample_name",
    "read_count_matrix",
]


def __getattr__(name: str) -> object:
    # read_count_matrix is imported on first use: its parser needs numba (~0.3 s to import),
    # which the processes that only merge, scan the inbox or parse names never need.
    if name == "read_count_matrix":
        from sc_assets.core.readers import read_count_matrix

        return read_count_matrix
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
