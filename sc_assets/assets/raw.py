"""``raw_count_matrix``: the input files themselves, as an external, observed asset."""

from dagster import AssetSpec

from sc_assets.assets.catalog import OWNERS, tags
from sc_assets.study import DEFAULT_STUDY, StudyKeys


def build_raw_count_matrix(study: StudyKeys) -> AssetSpec:
    """The study's ``raw_count_matrix`` (observed, never materialized here)."""
    return AssetSpec(
        study.raw_count_matrix,
        partitions_def=study.partitions,
        group_name=study.group,
        kinds={"file"},
        owners=OWNERS,
        tags=tags("source"),
        description=(
            "A sample's input as it landed: a row of the samplesheet (SC_ASSETS_SAMPLESHEET) or "
            "a file or folder of the data folder (SC_ASSETS_DATA_DIR), in any supported layout "
            "(GEO CSV/TSV, Cell Ranger HDF5 or MTX, STARsolo, h5ad). Not produced here: the "
            "new_samples_sensor and nightly_reingest observe it; its data version is the "
            "file's SHA-256 (a single file found in the data folder) or a hash of its files and "
            "its samplesheet row, so the UI shows which sample_adata partitions are stale."
        ),
    )


raw_count_matrix = build_raw_count_matrix(DEFAULT_STUDY)
