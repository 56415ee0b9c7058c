"""``reference_genes``: the gene list every sample is compared with, pinned once."""

from dagster import AssetExecutionContext, AssetsDefinition, Failure, MetadataValue, Output, asset

from sc_assets.assets.catalog import OWNERS, tags
from sc_assets.binding import STUDY_METADATA_KEY, study_name
from sc_assets.core import CountMatrixError
from sc_assets.core.genes import read_features_file
from sc_assets.core.qc import MT_PREFIX
from sc_assets.core.readers import read_gene_names
from sc_assets.core.samplesheet import SamplesheetError
from sc_assets.core.validation import gene_list_hash
from sc_assets.resources import SampleInbox
from sc_assets.study import DEFAULT_STUDY, StudyKeys


def build_reference_genes(study: StudyKeys) -> AssetsDefinition:
    """The study's ``reference_genes`` asset."""
    inbox_key = study.named("inbox")

    @asset(
        key=study.reference_genes,
        required_resource_keys={inbox_key},
        io_manager_key=study.named("gene_list_io_manager"),
        group_name=study.group,
        kinds={"text"},
        owners=OWNERS,
        tags=tags("reference"),
        code_version="1",
        description=(
            "The reference gene list (one symbol per line, made unique) that the gene_set check "
            "compares every sample with. From the configured features file "
            "(SC_ASSETS_REFERENCE_GENES) when given, otherwise from the first sample in "
            "partition-key order whose gene names read cleanly (only its features or header and "
            "gene column are read, not its counts). Materialized once and then pinned, so every "
            "sample is compared with the same list whatever order the runs finish in; "
            "re-materialize it to re-pin."
        ),
    )
    def reference_genes(context: AssetExecutionContext) -> Output[list[str]]:
        return _pin(context, getattr(context.resources, inbox_key), study)

    return reference_genes


def _pin(context: AssetExecutionContext, inbox: SampleInbox, study: StudyKeys) -> Output[list[str]]:
    skipped: list[str] = []
    if inbox.reference_genes_file:
        genes = read_features_file(inbox.reference_genes_file)
        source = inbox.reference_genes_file
    else:
        keys = sorted(context.instance.get_dynamic_partitions(study.partitions_name))
        if not keys:
            raise Failure("No sample partitions yet: register samples before pinning genes.")
        try:
            inputs = inbox.scan().samples
        except SamplesheetError as error:
            raise Failure(f"cannot pin genes: {error}") from None
        for key in keys:
            try:
                if key not in inputs:
                    raise FileNotFoundError("its input is no longer in the study")
                genes = read_gene_names(inputs[key].spec)
            except (CountMatrixError, OSError) as error:
                context.log.warning(f"{key} cannot serve as gene reference: {error}")
                skipped.append(key)
                continue
            source = f"sample {key}"
            break
        else:
            raise Failure(f"None of the {len(keys)} samples is readable; cannot pin genes.")
    return Output(
        genes,
        metadata={
            "source": source,
            "n_genes": len(genes),
            "n_mt_genes": sum(g.startswith(MT_PREFIX) for g in genes),
            "genes_hash": gene_list_hash(genes),
            "first_genes": MetadataValue.json(genes[:10]),
            "skipped_samples": MetadataValue.json(skipped),
            STUDY_METADATA_KEY: study_name(inbox.data_dir, inbox.samplesheet),
        },
    )


reference_genes = build_reference_genes(DEFAULT_STUDY)
