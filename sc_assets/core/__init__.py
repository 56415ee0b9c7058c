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
from sc_assets.core.reading import read_count_matrix

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
