"""The one Definitions object of the sc_assets code location."""

from dagster import Definitions

from sc_assets.assets import merged_adata, raw_count_matrix, reference_genes, sample_adata
from sc_assets.automation import build_merge_automation_sensor
from sc_assets.io_managers import GeneListIOManagerFactory, H5adIOManagerFactory
from sc_assets.jobs import merge_job, reference_job, reingest_job, sample_job
from sc_assets.resources import CheckThresholds, SampleInbox
from sc_assets.schedules import build_nightly_reingest
from sc_assets.sensors import build_new_samples_sensor
from sc_assets.settings import Settings


def build_definitions(settings: Settings) -> Definitions:
    """Definitions wired to ``settings`` (the code location uses the environment's)."""
    thresholds = settings.thresholds
    return Definitions(
        assets=[raw_count_matrix, reference_genes, sample_adata, merged_adata],
        jobs=[reference_job, sample_job, merge_job, reingest_job],
        sensors=[
            build_new_samples_sensor(settings.sensor_interval_seconds, settings.storage_dir),
            build_merge_automation_sensor(settings.sensor_interval_seconds),
        ],
        schedules=[build_nightly_reingest(settings.reingest_cron, settings.timezone)],
        resources={
            "inbox": SampleInbox(
                data_dir=str(settings.data_dir),
                samplesheet=str(settings.samplesheet) if settings.samplesheet else None,
                reference_genes_file=(
                    str(settings.reference_genes) if settings.reference_genes else None
                ),
            ),
            "check_thresholds": CheckThresholds(
                min_cells=thresholds.min_cells,
                max_cells=thresholds.max_cells,
                min_zero_fraction=thresholds.min_zero_fraction,
            ),
            "h5ad_io_manager": H5adIOManagerFactory(
                base_dir=settings.storage_dir, compression=settings.h5ad_compression
            ),
            "gene_list_io_manager": GeneListIOManagerFactory(base_dir=settings.storage_dir),
        },
    )


defs = build_definitions(Settings.from_env())
