"""``sample_adata``: one annotated AnnData per sample partition, checked as it is built."""

import base64
from collections.abc import Iterator

from anndata import AnnData
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
from sc_assets.core.readers import PROTEIN_KEY, UNS_KEY
from sc_assets.core.samples import SampleSpec
from sc_assets.core.validation import sample_outcomes
from sc_assets.partitions import samples_partitions
from sc_assets.resources import CheckThresholds, SampleInbox


def read_metadata(adata: AnnData, spec: SampleSpec) -> dict[str, object]:
    """What the reader found (layout, counts source, dropped features) and the sample's spec."""
    found = dict(adata.uns.get(UNS_KEY, {}))
    metadata: dict[str, object] = {"layout": str(found.pop("layout", spec.format))}
    if PROTEIN_KEY in adata.obsm:
        metadata["n_proteins"] = int(adata.obsm[PROTEIN_KEY].shape[1])
    for key, value in found.items():
        metadata[key] = MetadataValue.json(value) if isinstance(value, dict) else str(value)
    metadata["sample_spec"] = MetadataValue.json(spec.describe())
    return metadata


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
        "One sample as AnnData (cells x genes), read from any supported layout (GEO CSV/TSV, "
        "Cell Ranger HDF5 or MTX, STARsolo, h5ad): X and layers['counts'] hold the raw "
        "counts (CSR float32), obs has the sample's metadata (from its samplesheet row or "
        "GEO file name) and scanpy QC metrics (total_counts, n_genes_by_counts, "
        "pct_counts_mt), var['mt'] flags MT- genes, obsm['protein_expression'] holds "
        "antibody counts (CITE-seq). Partition key = the sample name. Checks run on the "
        "same object before it is released; a failing ERROR check keeps the sample out of "
        "merged_adata. QC histograms: a partition's `qc_plots` metadata (Show Markdown)."
    ),
)
def sample_adata(
    context: AssetExecutionContext,
    inbox: SampleInbox,
    check_thresholds: CheckThresholds,
    reference_genes: list[str],
) -> Iterator[Output | AssetCheckResult]:
    spec = inbox.sample(context.partition_key).spec
    # Imported here: the CSV parser needs numba (~0.3 s), which only the processes that run
    # this asset need (not the code server, the sensors or the merge runs).
    from sc_assets.core.readers import read_sample

    adata = read_sample(spec)
    outcomes = sample_outcomes(adata, reference_genes, check_thresholds.thresholds)
    plot = base64.b64encode(qc_plot_png(adata, title=context.partition_key)).decode()
    yield Output(
        adata,
        metadata={
            **adata_summary(adata),
            "dagster/row_count": adata.n_obs,
            "source": MetadataValue.path(str(spec.path)),
            **read_metadata(adata, spec),
            "qc_plots": MetadataValue.md(f"![QC plots](data:image/png;base64,{plot})"),
        },
    )
    for outcome in outcomes:
        yield to_check_result(outcome, context.asset_key)
