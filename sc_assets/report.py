"""Gather the latest check results from the Dagster instance into a report."""

from __future__ import annotations

import base64
import datetime as dt
import re
from pathlib import Path

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

from sc_assets.checks import MERGED_ADATA, MERGED_CHECKS, SAMPLE_ADATA, SAMPLE_CHECKS
from sc_assets.core.report import CheckCell, Report, ReportRow, WrittenReport
from sc_assets.core.report import write_report as write_report_files
from sc_assets.partitions import SAMPLES_PARTITIONS_NAME
from sc_assets.sample_status import latest_check_evaluations, latest_run_failure

_PLOT_RE = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def write_report(instance: DagsterInstance, out_dir: Path) -> WrittenReport:
    """Write ``report.md`` and ``report.html`` for every sample and the merge into ``out_dir``."""
    return write_report_files(gather_report(instance), out_dir)


def gather_report(instance: DagsterInstance) -> Report:
    """The latest result of every check of every sample partition and of ``merged_adata``."""
    keys = sorted(instance.get_dynamic_partitions(SAMPLES_PARTITIONS_NAME))
    samples = [_row(instance, SAMPLE_ADATA, list(SAMPLE_CHECKS), key) for key in keys]
    merged = _row(instance, MERGED_ADATA, list(MERGED_CHECKS), None)
    return Report(
        title="sc-assets check report",
        sample_checks=list(SAMPLE_CHECKS),
        samples=samples,
        merged_checks=list(MERGED_CHECKS),
        merged=ReportRow("merged_adata", merged.checks, merged.note),
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
    value = records[0].asset_materialization.metadata.get("qc_plots")
    match = _PLOT_RE.search(str(value.value)) if value is not None else None
    return base64.b64decode(match.group(1)) if match else None
