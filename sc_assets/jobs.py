"""Jobs: the units the CLI, the sensor and the schedule launch.

Each is one step, so it runs in the run's own process (``in_process_executor``): the
multiprocess executor would start a second Python process per run, importing Dagster and
anndata again (~2 s) for nothing. Parallelism comes from running several runs at once (the run
queue, or ``sc-assets ingest --workers``). Every study has its four jobs, named
``<study>__<job>`` (the default study's without a prefix).
"""

import functools
from dataclasses import dataclass

from dagster import AssetSelection, define_asset_job, in_process_executor
from dagster._core.definitions.unresolved_asset_job_definition import (  # not re-exported
    UnresolvedAssetJobDefinition,
)

from sc_assets.study import DEFAULT_STUDY, StudyKeys

#: The jobs' names in the default study (another study's: ``StudyKeys.named(name)``).
PIN_REFERENCE_GENES = "pin_reference_genes"
INGEST_SAMPLE = "ingest_sample"
MERGE_SAMPLES = "merge_samples"
REINGEST = "reingest"

#: Tags of every run that merges: with dagster-celery's CeleryRunLauncher the run goes to the
#: ``merge`` queue, so a deployment can serve it with a big-disk worker (deploy/worker.sh);
#: other run launchers ignore the tag.
MERGE_RUN_TAGS = {"dagster-celery/queue": "merge"}


@dataclass(frozen=True)
class StudyJobs:
    reference: UnresolvedAssetJobDefinition
    sample: UnresolvedAssetJobDefinition
    merge: UnresolvedAssetJobDefinition
    reingest: UnresolvedAssetJobDefinition

    def all(self) -> list[UnresolvedAssetJobDefinition]:
        return [self.reference, self.sample, self.merge, self.reingest]


@functools.cache
def build_jobs(study: StudyKeys) -> StudyJobs:
    """The study's jobs (the same objects for the same study: sensors, the schedule and the
    Definitions share them)."""
    reference, sample, merged = study.reference_genes, study.sample_adata, study.merged_adata
    return StudyJobs(
        reference=define_asset_job(
            study.named(PIN_REFERENCE_GENES),
            selection=AssetSelection.assets(reference),
            executor_def=in_process_executor,
            description=(
                "Pin the reference gene list that the gene_set check compares samples with."
            ),
        ),
        sample=define_asset_job(
            study.named(INGEST_SAMPLE),
            selection=AssetSelection.assets(sample),
            executor_def=in_process_executor,
            description="Read, annotate and check one sample, or a batch (a partition range).",
        ),
        merge=define_asset_job(
            study.named(MERGE_SAMPLES),
            selection=AssetSelection.assets(merged),
            executor_def=in_process_executor,
            tags=MERGE_RUN_TAGS,
            description="Stream every checked sample into merged_adata and check the result.",
        ),
        reingest=define_asset_job(
            study.named(REINGEST),
            selection=AssetSelection.assets(reference, sample, merged),
            executor_def=in_process_executor,
            description=(
                "The nightly_reingest schedule's target: each run selects one of its assets (a "
                "sample partition, the merge, or the reference gene list when it was never "
                "pinned)."
            ),
        ),
    )


_DEFAULT = build_jobs(DEFAULT_STUDY)
reference_job, sample_job, merge_job, reingest_job = _DEFAULT.all()
