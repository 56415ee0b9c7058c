"""``merged_adata``: all samples in one AnnData, streamed from the per-sample files on disk."""

from collections.abc import Iterator
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from upath import UPath

from sc_assets.assets.catalog import OWNERS, tags
from sc_assets.automation import merge_when_samples_settle
from sc_assets.checks import merged_check_specs, table_metadata, to_check_result
from sc_assets.core.atomic import atomic_path
from sc_assets.core.h5ad import H5adLayout, read_h5ad_layout
from sc_assets.core.incremental import collect_garbage, update_merged
from sc_assets.core.merge import MergeSummary, merge_h5ad
from sc_assets.core.samples import sample_label
from sc_assets.core.validation import merged_outcomes, protein_panel_outcome
from sc_assets.io_managers import LOAD_AS_PATH, DeferredH5ad, staged_reads
from sc_assets.resources import CheckThresholds
from sc_assets.sample_status import sample_statuses
from sc_assets.study import DEFAULT_STUDY, StudyKeys


def build_merged_adata(study: StudyKeys) -> AssetsDefinition:
    """The study's ``merged_adata`` asset."""
    thresholds_key = study.named("check_thresholds")

    @asset(
        key=study.merged_adata,
        ins={"sample_adata": AssetIn(key=study.sample_adata, metadata={LOAD_AS_PATH: True})},
        required_resource_keys={thresholds_key},
        automation_condition=merge_when_samples_settle,
        check_specs=merged_check_specs(study),
        io_manager_key=study.named("h5ad_io_manager"),
        group_name=study.group,
        kinds={"anndata", "h5ad"},
        owners=OWNERS,
        tags=tags("merge"),
        code_version="1",
        description=(
            "All samples concatenated (anndata.concat semantics: inner join on genes, "
            "merge='same', label='sample'), obs names `<sample>-<barcode>`, layers['counts'] "
            "included. Streamed from the per-sample .h5ad files in fixed-size blocks, so memory "
            "stays flat however many samples there are. On local storage it is incremental: "
            "only new or changed samples' matrices are written, into parts beside the file "
            "(`merge_mode` and `bytes_written` in the metadata; `sc-assets export merged` for a "
            "self-contained copy). Refuses to run while any sample is unmaterialized or fails an "
            "ERROR check, and names those samples."
        ),
    )
    def merged_adata(
        context: AssetExecutionContext, sample_adata: dict[str, UPath] | None
    ) -> Iterator[Output | AssetCheckResult]:
        thresholds = getattr(context.resources, thresholds_key)
        yield from _merge_samples(context, thresholds, sample_adata, study)

    return merged_adata


def _merge_samples(
    context: AssetExecutionContext,
    check_thresholds: CheckThresholds,
    sample_adata: dict[str, UPath] | None,
    study: StudyKeys,
) -> Iterator[Output | AssetCheckResult]:
    paths = dict(sorted((sample_adata or {}).items()))
    if not paths:
        raise Failure("No sample partitions are registered: there is nothing to merge.")
    statuses = sample_statuses(context.instance, paths, study)
    blocked = [status for status in statuses.values() if status.blocked]
    if blocked:
        raise Failure(
            description=(
                f"merged_adata not built: {len(blocked)} of {len(paths)} samples cannot enter "
                "the merge. "
                + " | ".join(f"{status.partition_key}: {status.reason}" for status in blocked)
            ),
            metadata={
                "blocked_samples": table_metadata(
                    [{"sample": s.partition_key, "reason": s.reason} for s in blocked]
                )
            },
        )
    with staged_reads(paths) as local:
        sources = [(sample_label(key), local[key]) for key in paths]
        yield from _merge_sources(context, check_thresholds, sources, list(paths))


def _sample_keys(context: AssetExecutionContext, keys: list[str]) -> dict[str, str]:
    """Label (obs["sample"]) -> partition key, for this merge's samples and the last one's
    (a removed sample is named by its key too)."""
    last = context.instance.get_latest_materialization_event(context.asset_key)
    metadata = last.asset_materialization.metadata if last and last.asset_materialization else {}
    before = metadata["samples"].value if "samples" in metadata else []
    return {sample_label(key): key for key in [*before, *keys]}


def _merge_sources(
    context: AssetExecutionContext,
    check_thresholds: CheckThresholds,
    sources: list[tuple[str, Path]],
    keys: list[str],
) -> Iterator[Output | AssetCheckResult]:
    merged = DeferredH5ad(
        write=lambda tmp, compression: _merge(sources, tmp, compression),
        write_in_place=lambda path, compression: _update(
            sources, path, compression, _sample_keys(context, keys)
        ),
        describe=lambda result: _describe(*result[::2]),
        # The merged file is about the samples' files together (their obs and X, once).
        size_hint=sum(path.stat().st_size for _, path in sources),
    )
    yield Output(merged, metadata={"samples": MetadataValue.json(keys)})
    summary, layout, _ = merged.result
    layouts = {label: read_h5ad_layout(path) for label, path in sources}
    sample_genes = {label: sample.var_names for label, sample in layouts.items()}
    outcomes = merged_outcomes(summary, layout, sample_genes, check_thresholds.thresholds)
    outcomes.append(protein_panel_outcome({k: v.protein_panel for k, v in layouts.items()}))
    for outcome in outcomes:
        yield to_check_result(outcome, context.asset_key)


def _merge(
    sources: list[tuple[str, Path]], tmp: Path, compression: str | None
) -> tuple[MergeSummary, H5adLayout, dict[str, object]]:
    """The full merge into a temporary file (object storage: uploaded once complete)."""
    summary = merge_h5ad(sources, tmp, compression=compression)
    how = {"merge_mode": "full", "full_reason": "object storage"}
    how["bytes_written"] = tmp.stat().st_size
    return summary, read_h5ad_layout(tmp), how  # what was written, before it is moved


def _update(
    sources: list[tuple[str, Path]], path: Path, compression: str | None, keys: dict[str, str]
) -> tuple[MergeSummary, H5adLayout, dict[str, object]]:
    """The merge on local storage: incremental (only new or changed samples' matrices are
    written; sc_assets.core.incremental), or full when the matrices are to be compressed."""
    if compression is not None:
        with atomic_path(path) as tmp:
            summary = merge_h5ad(sources, tmp, compression=compression)
            how = {
                "merge_mode": "full",
                "full_reason": f"compressed storage (SC_ASSETS_H5AD_COMPRESSION={compression})",
                "bytes_written": tmp.stat().st_size,
            }
        return summary, read_h5ad_layout(path), how
    result = update_merged(sources, path)
    collect_garbage(path)  # versions retired over an hour ago that nobody reads any more
    how = result.metadata()
    for name in ("samples_added", "samples_replaced", "samples_removed", "parts_repaired"):
        how[name] = [keys.get(label, label) for label in how[name]]  # partition keys
    return result.summary, read_h5ad_layout(path), how


def _describe(summary: MergeSummary, how: dict[str, object]) -> dict[str, object]:
    size = summary.n_obs * summary.n_vars
    return {
        **how,
        "dagster/row_count": summary.n_obs,
        "n_obs": summary.n_obs,
        "n_vars": summary.n_vars,
        "nnz": summary.nnz,
        "sparsity": round(1.0 - summary.nnz / size, 6) if size else 1.0,
        "median_total_counts": summary.median_total_counts,
        "n_samples": len(summary.samples),
    }


merged_adata = build_merged_adata(DEFAULT_STUDY)
