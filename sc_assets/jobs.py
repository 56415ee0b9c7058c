"""Jobs: the units the CLI, the sensor and the schedule launch.

Each is one step, so it runs in the run's own process (``in_process_executor``): the
multiprocess executor would start a second Python process per run, importing Dagster and
anndata again (~2 s) for nothing. Parallelism comes from running several runs at once (the run
queue, or ``sc-assets ingest --workers``).
"""

from dagster import AssetSelection, define_asset_job, in_process_executor

from sc_assets.assets import merged_adata, reference_genes, sample_adata

reference_job = define_asset_job(
    "pin_reference_genes",
    selection=AssetSelection.assets(reference_genes),
    executor_def=in_process_executor,
    description="Pin the reference gene list that the gene_set check compares samples with.",
)

sample_job = define_asset_job(
    "ingest_sample",
    selection=AssetSelection.assets(sample_adata),
    executor_def=in_process_executor,
    description="Read, annotate and check one sample (one partition per run).",
)

merge_job = define_asset_job(
    "merge_samples",
    selection=AssetSelection.assets(merged_adata),
    executor_def=in_process_executor,
    description="Stream every checked sample into merged_adata and check the result.",
)

reingest_job = define_asset_job(
    "reingest",
    selection=AssetSelection.assets(reference_genes, sample_adata, merged_adata),
    executor_def=in_process_executor,
    description=(
        "The nightly_reingest schedule's target: each run selects one of its assets (a sample "
        "partition, the merge, or the reference gene list when it was never pinned)."
    ),
)
