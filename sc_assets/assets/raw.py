"""``raw_count_matrix``: the input files themselves, as an external, observed asset."""

from dagster import AssetSpec

from sc_assets.assets.catalog import OWNERS, tags
from sc_assets.partitions import samples_partitions

raw_count_matrix = AssetSpec(
    "raw_count_matrix",
    partitions_def=samples_partitions,
    group_name="single_cell",
    kinds={"csv"},
    owners=OWNERS,
    tags=tags("source"),
    description=(
        "A per-sample count matrix file as it landed in the input folder "
        "(SC_ASSETS_DATA_DIR): genes x cells, gzipped CSV, named "
        "`GSM<id>_<Condition><donor>_count_matrix.csv.gz`. Not produced here: the "
        "new_samples_sensor and nightly_reingest observe it, and its data version is the "
        "file's SHA-256, so the UI shows which sample_adata partitions are stale."
    ),
)
