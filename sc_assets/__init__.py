"""sc-assets: single-cell RNA-seq ingestion as Dagster software-defined assets."""
