"""Gather the latest check results from the Dagster instance into a report."""

from __future__ import annotations

import base64
import datetime as dt
import re
from pathlib import Path

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from sc_assets.checks import MERGED_CHECKS, SAMPLE_CHECKS
from sc_assets.core.report import CheckCell, Report, ReportRow, WrittenReport
from sc_assets.core.report import write_report as write_report_files
from sc_assets.sample_status import latest_check_evaluations, latest_run_failure, run_failures
from sc_assets.study import DEFAULT_STUDY, StudyKeys

_PLOT_RE = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def write_report(
    instance: DagsterInstance, out_dir: Path, study: StudyKeys = DEFAULT_STUDY
) -> WrittenReport:
    """Write ``report.md`` and ``report.html`` for every sample and the merge into ``out_dir``."""
    return write_report_files(gather_report(instance, study), out_dir)


def gather_report(instance: DagsterInstance, study: StudyKeys = DEFAULT_STUDY) -> Report:
    """The latest result of every check of every sample partition and of ``merged_adata``.

    The samples' rows take a few queries whatever their number (see :func:`_sample_rows`).
    """
    keys = sorted(instance.get_dynamic_partitions(study.partitions_name))
    samples = _sample_rows(instance, keys, study.sample_adata)
    merged = _row(instance, study.merged_adata, list(MERGED_CHECKS), None)
    return Report(
        title="sc-assets check report"
        + (f": study {study.name}" if study != DEFAULT_STUDY else ""),
        sample_checks=list(SAMPLE_CHECKS),
        samples=samples,
        merged_checks=list(MERGED_CHECKS),
        merged=ReportRow(study.merged_adata.to_user_string(), merged.checks, merged.note),
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def _row(
    instance: DagsterInstance, asset_key: AssetKey, checks: list[str], partition: str | None
) -> ReportRow:
    name = partition or asset_key.to_user_string()
    evaluations = latest_check_evaluations(instance, asset_key, checks, partition)
    cells = {check: _cell(evaluation) for check, evaluation in evaluations.items()}
    note = latest_run_failure(instance, asset_key, partition)
    if note is None and not cells:
        note = "never materialized"
    return ReportRow(name, cells, note or "", _plot(instance, asset_key, partition))


def _sample_rows(
    instance: DagsterInstance, keys: list[str], sample_adata: AssetKey = DEFAULT_STUDY.sample_adata
) -> list[ReportRow]:
    """One row per sample, in a few queries whatever their number: the latest
    materializations (plots) in two, the checks' latest evaluations in seven, the run
    failures in two plus one per failed run."""
    storage = instance.event_log_storage
    latest = instance.get_latest_storage_id_by_partition(
        sample_adata, DagsterEventType.ASSET_MATERIALIZATION, partitions=set(keys)
    )
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=sample_adata, storage_ids=list(latest.values())),
        limit=max(len(latest), 1),
    ).records
    plots = {str(r.partition_key): _plot_bytes(r.asset_materialization) for r in records}
    # Each check's latest evaluations, newest first, across partitions: one query per check
    # (a partition evaluated many times may fall outside; it then gets its own query).
    finished = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
    evaluations: dict[str, dict[str, AssetCheckEvaluation]] = {key: {} for key in keys}
    for name in SAMPLE_CHECKS:
        history = storage.get_asset_check_execution_history(
            AssetCheckKey(sample_adata, name), limit=4 * len(keys) + 100, status=finished
        )
        for record in history:
            found = evaluations.get(str(record.partition))
            if found is not None and name not in found and record.evaluation is not None:
                found[name] = record.evaluation
    checked = {
        str(info.partition_key)
        for info in storage.get_asset_check_partition_info(
            [AssetCheckKey(sample_adata, name) for name in SAMPLE_CHECKS], partition_keys=keys
        )
    }
    errors = run_failures(instance, sample_adata, keys)
    rows = []
    for key in keys:
        found = evaluations[key]
        if key in checked and len(found) < len(SAMPLE_CHECKS):
            found = latest_check_evaluations(instance, sample_adata, list(SAMPLE_CHECKS), key)
        cells = {check: _cell(found[check]) for check in SAMPLE_CHECKS if check in found}
        note = errors.get(key) or ("" if cells else "never materialized")
        rows.append(ReportRow(key, cells, note, plots.get(key)))
    return rows


def _cell(evaluation: AssetCheckEvaluation) -> CheckCell:
    if evaluation.passed:
        status = "pass"
    else:
        status = "fail" if evaluation.severity.value == "ERROR" else "warn"
    summary = evaluation.metadata.get("summary")
    return CheckCell(
        status=status,
        summary=str(summary.value) if summary is not None else "",
        description=evaluation.description or "",
    )


def _plot(instance: DagsterInstance, asset_key: AssetKey, partition: str | None) -> bytes | None:
    if partition is None:
        return None
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    return _plot_bytes(records[0].asset_materialization)


def _plot_bytes(materialization) -> bytes | None:
    """The QC plot PNG a materialization carries in its ``qc_plots`` metadata, if any."""
    value = materialization.metadata.get("qc_plots") if materialization else None
    match = _PLOT_RE.search(str(value.value)) if value is not None else None
    return base64.b64decode(match.group(1)) if match else None
