"""Resources: where the input files are, and the check thresholds.

Built from :class:`sc_assets.settings.Settings` in ``definitions.py``; every field can also be
overridden per run in the launchpad.
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from sc_assets.core import SampleName, parse_partition_key
from sc_assets.core.validation import Thresholds


class SampleInbox(ConfigurableResource):
    """The folder where per-sample count-matrix files land (``SC_ASSETS_DATA_DIR``)."""

    data_dir: str = Field(description="Folder of GSM*_count_matrix.csv.gz files.")
    reference_genes_file: str | None = Field(
        default=None,
        description=(
            "Optional 10x features.tsv(.gz) or one-symbol-per-line file to compare every "
            "sample's genes with; default: the genes of the first sample in partition-key order."
        ),
    )

    def sample_file(self, partition_key: str) -> Path:
        """The source file of a partition (``<data_dir>/<key>_count_matrix.csv.gz``)."""
        sample: SampleName = parse_partition_key(partition_key)
        return Path(self.data_dir) / sample.file_name


class CheckThresholds(ConfigurableResource):
    """Thresholds of the per-sample and merged checks (see the README for defaults)."""

    min_cells: int = Field(default=Thresholds.min_cells, description="cell_count lower bound.")
    max_cells: int = Field(default=Thresholds.max_cells, description="cell_count upper bound.")
    min_zero_fraction: float = Field(
        default=Thresholds.min_zero_fraction, description="sparsity: minimum fraction of zeros."
    )

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(
            min_cells=self.min_cells,
            max_cells=self.max_cells,
            min_zero_fraction=self.min_zero_fraction,
        )
