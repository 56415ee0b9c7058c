"""Asset checks: their specs, and core validation outcomes turned into AssetCheckResults.

What counts as a failure is decided in :mod:`sc_assets.core.validation`; this module only
names the checks for Dagster and carries the outcome's numbers into check metadata.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    PreviewWarning,
    TableColumn,
    TableRecord,
    TableSchema,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # not re-exported
    AssetCheckEvaluationTargetMaterializationData,
)

from sc_assets.core.validation import CheckOutcome, Severity
from sc_assets.study import DEFAULT_STUDY, StudyKeys

#: The default study's checked assets (another study's: ``StudyKeys.sample_adata``...).
SAMPLE_ADATA = DEFAULT_STUDY.sample_adata
MERGED_ADATA = DEFAULT_STUDY.merged_adata

#: Per-sample checks: name -> (description, severity). ERROR checks block the merge.
SAMPLE_CHECKS: Mapping[str, tuple[str, Severity]] = {
    "cell_count": (
        "Number of cells within the configured bounds (default 100 to 100,000): catches an "
        "empty or failed library and an unfiltered Cell Ranger matrix.",
        Severity.ERROR,
    ),
    "gene_set": (
        "Genes identical, in name and order, to the pinned reference gene list "
        "(reference_genes): an inner-join merge would otherwise drop genes silently.",
        Severity.ERROR,
    ),
    "sparsity": (
        "X is a CSR matrix and at least the configured fraction of its values (default 90%) "
        "is zero, as raw single-cell counts are.",
        Severity.ERROR,
    ),
    "count_integrity": (
        'Counts are finite, non-negative whole numbers, layers["counts"] equals X, and '
        "barcodes are unique.",
        Severity.ERROR,
    ),
    "empty_cells": ("Cells with zero total counts (a warning, with the number).", Severity.WARN),
    "mt_genes": (
        "Mitochondrial (MT-) genes are present; without them pct_counts_mt means nothing "
        "(a warning).",
        Severity.WARN,
    ),
}

#: Checks on the merged data, all ERROR.
MERGED_CHECKS: Mapping[str, str] = {
    "cell_count": "Number of cells equals the sum over the samples merged (table per sample).",
    "gene_set": "Genes equal every merged sample's genes (same names, same order).",
    "sparsity": "X is CSR and at least the configured fraction of values is zero.",
    "counts_layer": 'layers["counts"] equals X: same nnz, same sum, same checksum.',
    "unique_obs_names": "Every cell name (`<sample>-<barcode>`) is unique.",
    "protein_panel": (
        "Every sample with antibody counts (obsm['protein_expression'], CITE-seq) has the same "
        "panel of antibodies, in the same order."
    ),
}

#: Check metadata keys that echo configured thresholds.
THRESHOLD_KEYS = frozenset({"min_cells", "max_cells", "min_zero_fraction"})

BLOCKING_SAMPLE_CHECKS = tuple(
    name for name, (_, severity) in SAMPLE_CHECKS.items() if severity is Severity.ERROR
)


def sample_check_specs(study: StudyKeys = DEFAULT_STUDY) -> list[AssetCheckSpec]:
    """Specs of the per-sample checks, partitioned like the study's ``sample_adata``."""
    # Partitioned checks are a preview feature of Dagster 1.13, used on purpose: it is what
    # shows a check status per sample in the UI. Say so once here, not at every import.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return _sample_check_specs(study)


def _sample_check_specs(study: StudyKeys) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            name,
            asset=study.sample_adata,
            description=f"[{severity.value}] {description}",
            blocking=severity is Severity.ERROR,
            partitions_def=study.partitions,
        )
        for name, (description, severity) in SAMPLE_CHECKS.items()
    ]


def merged_check_specs(study: StudyKeys = DEFAULT_STUDY) -> list[AssetCheckSpec]:
    """Specs of the checks on the study's ``merged_adata``."""
    return [
        AssetCheckSpec(
            name, asset=study.merged_adata, description=f"[ERROR] {description}", blocking=True
        )
        for name, description in MERGED_CHECKS.items()
    ]


def to_check_result(outcome: CheckOutcome, asset_key: AssetKey) -> AssetCheckResult:
    """An AssetCheckResult carrying the outcome's description, key number and metadata."""
    return AssetCheckResult(
        asset_key=asset_key,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=_severity(outcome),
        description=outcome.description,
        metadata=check_metadata(outcome),
    )


def to_check_evaluation(
    outcome: CheckOutcome,
    asset_key: AssetKey,
    partition: str,
    target: AssetCheckEvaluationTargetMaterializationData,
) -> AssetCheckEvaluation:
    """The evaluation of a per-sample check on one partition, aimed at its materialization.

    What Dagster makes of an AssetCheckResult in a single-partition run; a run of several
    partitions names the partition and the materialization itself (an AssetCheckResult can
    only be attributed to a run's single partition).
    """
    return AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=outcome.name,
        passed=outcome.passed,
        metadata=check_metadata(outcome),
        target_materialization_data=target,
        severity=_severity(outcome),
        description=outcome.description,
        blocking=outcome.severity is Severity.ERROR,
        partition=partition,
    )


def check_metadata(outcome: CheckOutcome) -> dict[str, Any]:
    """The outcome's key number and metadata as Dagster metadata."""
    metadata: dict[str, Any] = {"summary": MetadataValue.text(outcome.summary)}
    for key, value in outcome.metadata.items():
        # A threshold is configuration, not a measurement: text, so the UI does not plot it.
        metadata[key] = str(value) if key in THRESHOLD_KEYS else to_metadata_value(value)
    return metadata


def _severity(outcome: CheckOutcome) -> AssetCheckSeverity:
    if outcome.severity is Severity.ERROR:
        return AssetCheckSeverity.ERROR
    return AssetCheckSeverity.WARN


def to_metadata_value(value: Any) -> Any:
    """Plain values as Dagster metadata; lists of dicts become tables, lists become JSON."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return table_metadata(value)
    if isinstance(value, (list, tuple)):
        return MetadataValue.json([str(v) for v in value])
    return value


def table_metadata(rows: list[dict[str, Any]]) -> MetadataValue:
    """A table metadata value whose columns are the keys of the first row."""
    columns = list(rows[0])
    type_names = {bool: "bool", int: "int", float: "float"}
    schema = TableSchema(
        columns=[
            TableColumn(name, type_names.get(type(rows[0][name]), "string")) for name in columns
        ]
    )
    return MetadataValue.table(
        records=[TableRecord({name: row[name] for name in columns}) for row in rows],
        schema=schema,
    )
