"""A study's names in the code location: asset keys, partitions, jobs, sensors, resources.

The code location serves several studies side by side. Each has its own partitions, assets,
checks, jobs, sensors, schedule and resources, named from the study's name: study ``pbmc``
has ``pbmc/sample_adata``, partitions ``pbmc_samples``, job ``pbmc__ingest_sample`` and
resource ``pbmc__inbox``. The default study (configured from the ``SC_ASSETS_*`` variables)
keeps the unprefixed names it always had (``sample_adata``, ``samples``, ``ingest_sample``),
so instances and stored files of earlier versions stay valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from dagster import AssetKey, DynamicPartitionsDefinition

#: A study's name: a key prefix, group, partitions and job name part.
STUDY_NAME = re.compile(r"[a-z][a-z0-9_]{0,40}\Z")
#: The name of the study configured from the environment.
DEFAULT_STUDY_NAME = "default"


@dataclass(frozen=True)
class StudyKeys:
    """How one study's definitions are named (see the module docstring)."""

    name: str = DEFAULT_STUDY_NAME
    prefixed: bool = False
    """False only for the default study: its names carry no prefix."""

    def asset(self, name: str) -> AssetKey:
        return AssetKey([self.name, name] if self.prefixed else [name])

    @property
    def raw_count_matrix(self) -> AssetKey:
        return self.asset("raw_count_matrix")

    @property
    def reference_genes(self) -> AssetKey:
        return self.asset("reference_genes")

    @property
    def sample_adata(self) -> AssetKey:
        return self.asset("sample_adata")

    @property
    def merged_adata(self) -> AssetKey:
        return self.asset("merged_adata")

    @property
    def partitions_name(self) -> str:
        return f"{self.name}_samples" if self.prefixed else "samples"

    @cached_property
    def partitions(self) -> DynamicPartitionsDefinition:
        return DynamicPartitionsDefinition(name=self.partitions_name)

    @property
    def group(self) -> str:
        return self.name if self.prefixed else "single_cell"

    def named(self, base: str) -> str:
        """A job, sensor, schedule or resource key of this study: ``<study>__<base>``."""
        return f"{self.name}__{base}" if self.prefixed else base

    def owns_job(self, job_name: str) -> bool:
        return job_name.startswith(f"{self.name}__") if self.prefixed else "__" not in job_name


DEFAULT_STUDY = StudyKeys()
