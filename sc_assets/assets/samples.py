"""``sample_adata``: one annotated AnnData per sample partition, checked as it is built.

A run builds one sample or a batch of them (a partition range: ``sc-assets ingest`` and the
sensor send batches, so that a study of hundreds of small samples does not pay a run per
sample; the UI launches single partitions, or backfills split by the backfill policy). Every
sample gets its own materialization and its own six check results, attributed to its
partition. A sample that cannot be read fails alone: the others of the batch are stored and
checked, then the run fails naming it (its partition shows failed, theirs materialized).
"""

import base64
import socket
import warnings
from collections.abc import Iterator, Sequence

from anndata import AnnData
from dagster import (
    AssetCheckEvaluation,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # not re-exported
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from sc_assets.assets.catalog import OWNERS, tags
from sc_assets.checks import sample_check_specs, to_check_evaluation
from sc_assets.core.plots import qc_plot_png
from sc_assets.core.qc import adata_summary
from sc_assets.core.readers import PROTEIN_KEY, UNS_KEY
from sc_assets.core.remote import origin
from sc_assets.core.samples import SampleSpec
from sc_assets.core.validation import sample_outcomes
from sc_assets.lineage import data_version_tags
from sc_assets.resources import CheckThresholds, SampleInbox
from sc_assets.sample_status import FAILED_SAMPLES_KEY
from sc_assets.sources import observed_sources
from sc_assets.study import DEFAULT_STUDY, StudyKeys

CODE_VERSION = "1"
#: Partitions per run when the UI backfills many: one run (and process) per this many samples.
MAX_PARTITIONS_PER_RUN = 50


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


def build_sample_adata(study: StudyKeys) -> AssetsDefinition:
    """The study's ``sample_adata`` asset (partitioned by its samples)."""
    inbox_key, thresholds_key = study.named("inbox"), study.named("check_thresholds")
    store_key = study.named("h5ad_io_manager")

    def sample_adata(
        context: AssetExecutionContext,
        reference_genes: Sequence,  # not list[str]: Dagster would type-check 33,000 strings
    ) -> Iterator[AssetMaterialization | AssetCheckEvaluation | Output]:
        yield from _build_samples(
            context,
            getattr(context.resources, inbox_key),
            getattr(context.resources, thresholds_key),
            getattr(context.resources, store_key),
            reference_genes,
            study,
        )

    # backfill_policy is a beta parameter of dagster 1.13, used on purpose (a backfill of many
    # samples from the UI runs in batches): said here once, not warned at every import.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return _sample_adata_asset(study, required={inbox_key, thresholds_key})(sample_adata)


def _sample_adata_asset(study: StudyKeys, required: set[str]):
    return asset(
        key=study.sample_adata,
        ins={"reference_genes": AssetIn(key=study.reference_genes)},
        required_resource_keys=required,
        partitions_def=study.partitions,
        deps=[study.raw_count_matrix],
        check_specs=sample_check_specs(study),
        io_manager_key=study.named("h5ad_io_manager"),
        output_required=False,  # each partition's materialization is recorded below
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=MAX_PARTITIONS_PER_RUN),
        group_name=study.group,
        kinds={"anndata", "h5ad"},
        owners=OWNERS,
        tags=tags("sample"),
        code_version=CODE_VERSION,
        description=(
            "One sample as AnnData (cells x genes), read from any supported layout (GEO CSV/TSV, "
            "Cell Ranger HDF5 or MTX, STARsolo, h5ad): X and layers['counts'] hold the raw "
            "counts (CSR float32), obs has the sample's metadata (from its samplesheet row or "
            "GEO file name) and scanpy QC metrics (total_counts, n_genes_by_counts, "
            "pct_counts_mt), var['mt'] flags MT- genes, obsm['protein_expression'] holds "
            "antibody counts (CITE-seq). Partition key = the sample name. Checks run on the "
            "same object before it is released; a failing ERROR check keeps the sample out of "
            "merged_adata. A run may build a batch of samples (a partition range); each has its "
            "own materialization and checks. QC histograms: a partition's `qc_plots` metadata "
            "(Show Markdown)."
        ),
    )


def _build_samples(
    context: AssetExecutionContext,
    inbox: SampleInbox,
    check_thresholds: CheckThresholds,
    store,
    reference_genes: Sequence,
    study: StudyKeys,
) -> Iterator[AssetMaterialization | AssetCheckEvaluation | Output]:
    # Imported here: the CSV parser needs numba (~0.3 s), which only the processes that run
    # this asset need (not the code server, the sensors or the merge runs).
    from sc_assets.core.readers import read_sample

    keys = context.partition_keys
    instance, asset_key = context.instance, context.asset_key
    sources = observed_sources(instance, keys, study)
    reference = _latest_materialization(instance, study.reference_genes)
    failed: dict[str, BaseException] = {}
    for key in keys:
        adata = None  # the previous sample is freed before this one is read
        try:
            spec = inbox.sample(key).spec
            adata = read_sample(spec)
            outcomes = sample_outcomes(adata, reference_genes, check_thresholds.thresholds)
            plot = base64.b64encode(qc_plot_png(adata, title=key)).decode()
            stored = store.store_partition(asset_key, key, adata)
        except Exception as error:  # this sample fails; the others of the batch go on
            if len(keys) == 1:
                raise
            context.log.error(f"{key}: {type(error).__name__}: {error}")
            failed[key] = error
            continue
        source = sources.get(key)
        yield AssetMaterialization(
            asset_key=asset_key,
            partition=key,
            metadata={
                **adata_summary(adata),
                "dagster/row_count": adata.n_obs,
                "source": MetadataValue.path(origin(spec.path)),
                "host": socket.gethostname(),  # which machine ran it (runs on Celery workers)
                **read_metadata(adata, spec),
                **stored,
                "qc_plots": MetadataValue.md(f"![QC plots](data:image/png;base64,{plot})"),
            },
            tags=data_version_tags(
                CODE_VERSION,
                {
                    study.raw_count_matrix: (source.sha256, source.storage_id)
                    if source
                    else (None, None),
                    study.reference_genes: reference,
                },
            ),
        )
        # The materialization is stored once yielded: the checks point at it.
        target = _partition_target(instance, asset_key, key)
        for outcome in outcomes:
            yield to_check_evaluation(outcome, asset_key, key, target)
    for check_key in context.assets_def.check_keys:  # the checks' (empty) outputs, once
        yield Output(
            None, output_name=context.assets_def.get_output_name_for_asset_check_key(check_key)
        )
    if len(failed) == 1:
        raise next(iter(failed.values()))
    if failed:
        raise Failure(
            description=f"{len(failed)} of {len(keys)} samples failed: "
            + "; ".join(f"{key}: {error}" for key, error in failed.items()),
            metadata={
                FAILED_SAMPLES_KEY: MetadataValue.json(
                    {key: f"{error}" for key, error in failed.items()}
                )
            },
        )


def _latest_materialization(instance, asset_key: AssetKey) -> tuple[str | None, int | None]:
    """(data version, event id) of the asset's latest materialization."""
    records = instance.fetch_materializations(asset_key, limit=1).records
    if not records:
        return None, None
    materialization = records[0].asset_materialization
    version = materialization.tags.get(DATA_VERSION_TAG) if materialization else None
    return version, records[0].storage_id


def _partition_target(
    instance, asset_key: AssetKey, partition: str
) -> AssetCheckEvaluationTargetMaterializationData:
    record = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )


sample_adata = build_sample_adata(DEFAULT_STUDY)
