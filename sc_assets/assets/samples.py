"""``sample_adata``: one annotated AnnData per sample partition, checked as it is built."""

import base64
from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    MetadataValue,
    Output,
    asset,
)

from sc_assets.assets.catalog import OWNERS, tags
from sc_assets.assets.raw import raw_count_matrix
from sc_assets.checks import sample_check_specs, to_check_result
from sc_assets.core.plots import qc_plot_png
from sc_assets.core.qc import adata_summary
from sc_assets.core.validation import sample_outcomes
from sc_assets.partitions import samples_partitions
from sc_assets.resources import CheckThresholds, SampleInbox


@asset(
    partitions_def=samples_partitions,
    deps=[raw_count_matrix],
    check_specs=sample_check_specs(),
    io_manager_key="h5ad_io_manager",
    group_name="single_cell",
    kinds={"anndata", "h5ad"},
    owners=OWNERS,
    tags=tags("sample"),
    code_version="1",
    description=(
        "One sample as AnnData (cells x genes): X and layers['counts'] hold the raw counts "
        "(CSR float32), obs has sample_id, condition, donor, sample and scanpy QC metrics "
        "(total_counts, n_genes_by_counts, pct_counts_mt), var['mt'] flags MT- genes. "
        "Partition key = file name without _count_matrix.csv.gz. Checks run on the same "
        "object before it is released; a failing ERROR check keeps the sample out of "
        "merged_adata. QC histograms: a partition's `qc_plots` metadata (Show Markdown)."
    ),
)
def sample_adata(
    context: AssetExecutionContext,
    inbox: SampleInbox,
    check_thresholds: CheckThresholds,
    reference_genes: list[str],
) -> Iterator[Output | AssetCheckResult]:
    path = inbox.sample_file(context.partition_key)
    # Imported here: the parser needs numba (~0.3 s), which only the processes that run this
    # asset need (not the code server, the sensors or the merge runs).
    from sc_assets.core.readers import read_count_matrix

    adata = read_count_matrix(path)
    outcomes = sample_outcomes(adata, reference_genes, check_thresholds.thresholds)
    plot = base64.b64encode(qc_plot_png(adata, title=context.partition_key)).decode()
    yield Output(
        adata,
        metadata={
            **adata_summary(adata),
            "dagster/row_count": adata.n_obs,
            "source": MetadataValue.path(str(path)),
            "qc_plots": MetadataValue.md(f"![QC plots](data:image/png;base64,{plot})"),
        },
    )
    for outcome in outcomes:
        yield to_check_result(outcome, context.asset_key)
