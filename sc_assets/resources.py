"""Resources: where a study's inputs are, and the check thresholds.

Built from :class:`sc_assets.settings.Settings` in ``definitions.py``; every field can also be
overridden per run in the launchpad.
"""

from __future__ import annotations

from dagster import ConfigurableResource, Failure
from pydantic import Field

from sc_assets.core.discovery import InboxScan, SampleInput, find_sample, scan_inbox
from sc_assets.core.validation import Thresholds


class SampleInbox(ConfigurableResource):
    """A study's inputs: its samplesheet, or its data folder scanned (``SC_ASSETS_DATA_DIR``)."""

    data_dir: str = Field(
        description=(
            "Data folder: GEO-named CSVs, .h5, .h5ad, MTX/STARsolo folders... (scanned when "
            "there is no samplesheet)."
        )
    )
    samplesheet: str | None = Field(
        default=None,
        description=(
            "Samplesheet CSV (sample, path, format, ... and metadata columns); default: "
            "samplesheet.csv in the data folder if there is one, else the folder is scanned."
        ),
    )
    reference_genes_file: str | None = Field(
        default=None,
        description=(
            "Optional 10x features.tsv(.gz) or one-symbol-per-line file to compare every "
            "sample's genes with; default: the genes of the first sample in partition-key order."
        ),
    )

    def scan(self) -> InboxScan:
        """Every sample of the study now (raises SamplesheetError for a bad samplesheet)."""
        return scan_inbox(self.data_dir, self.samplesheet)

    def sample(self, partition_key: str) -> SampleInput:
        """The input of one sample; a Failure naming the study when there is none."""
        found = find_sample(self.data_dir, self.samplesheet, partition_key)
        if found is None:
            where = self.samplesheet or self.data_dir
            raise Failure(f"sample {partition_key!r} is not in {where} (any more)")
        return found


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
