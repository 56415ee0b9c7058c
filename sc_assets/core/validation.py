"""Validation outcomes: what counts as a failure, and the numbers that explain it.

Each function here is pure: it takes an AnnData (or the summary of a merge) and thresholds
and returns a :class:`CheckOutcome`. The Dagster asset checks, the CLI report and the tests all
use these same functions, so "what failed and why" is decided in exactly one place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from sc_assets.core.h5ad import H5adLayout, matrices_equal
from sc_assets.core.merge import MergeSummary
from sc_assets.core.qc import COUNTS_LAYER, MT_PREFIX
from sc_assets.core.readers._contract import PROTEIN_KEY

#: How many offending names or values a check lists in its metadata.
EXAMPLES = 10


class Severity(StrEnum):
    """How bad a failed check is. ``ERROR`` checks keep a sample out of the merge."""

    ERROR = "ERROR"
    WARN = "WARN"


@dataclass(frozen=True)
class Thresholds:
    """Configurable limits of the checks (defaults documented in the README)."""

    min_cells: int = 100
    """Fewer cells than this is an empty or failed library."""
    max_cells: int = 100_000
    """More cells than this is an unfiltered Cell Ranger matrix dropped in by mistake."""
    min_zero_fraction: float = 0.90
    """A count matrix denser than this is not a single-cell count matrix."""


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check on one sample (or on the merged data)."""

    name: str
    """Check name, e.g. ``"gene_set"``."""
    passed: bool
    severity: Severity
    """Severity when the check fails."""
    summary: str
    """The key number, short enough for a report cell, e.g. ``"9,413 cells"``."""
    description: str
    """One or two sentences a person can act on."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Numbers, thresholds and offending names: ``int``, ``float``, ``bool``, ``str``,
    ``list[str]`` or a table as ``list[dict]``."""

    @property
    def status(self) -> str:
        """``"pass"``, ``"fail"`` (an ERROR check failed) or ``"warn"``."""
        if self.passed:
            return "pass"
        return "fail" if self.severity is Severity.ERROR else "warn"


def gene_list_hash(genes: Sequence[str]) -> str:
    """A short, order-sensitive fingerprint of a gene list (first 16 hex digits of SHA-256)."""
    digest = hashlib.sha256("\n".join(genes).encode()).hexdigest()
    return digest[:16]


# --- per-sample checks ---------------------------------------------------------------------


def cell_count_outcome(n_obs: int, thresholds: Thresholds = Thresholds()) -> CheckOutcome:
    """Number of cells within ``[min_cells, max_cells]``."""
    lo, hi = thresholds.min_cells, thresholds.max_cells
    passed = lo <= n_obs <= hi
    if passed:
        description = f"{n_obs:,} cells, within [{lo:,}, {hi:,}]."
    elif n_obs < lo:
        description = (
            f"Only {n_obs:,} cells, fewer than the minimum of {lo:,}: an empty or failed library?"
        )
    else:
        description = (
            f"{n_obs:,} cells, more than the maximum of {hi:,}: an unfiltered matrix "
            "(raw_feature_bc_matrix) instead of the filtered one?"
        )
    return CheckOutcome(
        name="cell_count",
        passed=passed,
        severity=Severity.ERROR,
        summary=f"{n_obs:,} cells",
        description=description,
        metadata={"n_cells": n_obs, "min_cells": lo, "max_cells": hi},
    )


def gene_set_outcome(
    genes: Sequence[str], reference: Sequence[str], *, reference_name: str = "reference"
) -> CheckOutcome:
    """Genes identical to the reference list: same names, same order."""
    genes = list(genes)
    reference = list(reference)
    passed = genes == reference
    in_genes, in_ref = set(genes), set(reference)
    missing = [g for g in reference if g not in in_genes]
    extra = [g for g in genes if g not in in_ref]
    if passed:
        description = f"All {len(genes):,} genes match the {reference_name} list, in order."
    elif missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing):,} genes missing (first: {', '.join(missing[:3])})")
        if extra:
            parts.append(f"{len(extra):,} extra genes (first: {', '.join(extra[:3])})")
        description = (
            f"{' and '.join(parts)} compared with the {reference_name} list of "
            f"{len(reference):,} genes: an inner join would drop genes silently."
        )
    else:
        first = next(i for i, (a, b) in enumerate(zip(genes, reference, strict=True)) if a != b)
        description = (
            f"Same {len(genes):,} genes as the {reference_name} list but in another order "
            f"(first difference at position {first:,}: {genes[first]!r} vs {reference[first]!r})."
        )
    n_missing, n_extra = len(missing), len(extra)
    summary = "identical" if passed else f"{n_missing:,} missing, {n_extra:,} extra"
    if not passed and not (missing or extra):
        summary = "order differs"
    return CheckOutcome(
        name="gene_set",
        passed=passed,
        severity=Severity.ERROR,
        summary=summary,
        description=description,
        metadata={
            "n_genes": len(genes),
            "n_reference_genes": len(reference),
            "n_missing": n_missing,
            "n_extra": n_extra,
            "first_missing": missing[:EXAMPLES],
            "first_extra": extra[:EXAMPLES],
            "genes_hash": gene_list_hash(genes),
            "reference_hash": gene_list_hash(reference),
            "reference": reference_name,
        },
    )


def sparsity_outcome(
    *,
    is_csr: bool,
    n_nonzero: int,
    shape: tuple[int, int],
    thresholds: Thresholds = Thresholds(),
) -> CheckOutcome:
    """``X`` stored as CSR and at least ``min_zero_fraction`` of its entries zero."""
    size = shape[0] * shape[1]
    zero_fraction = 1.0 - n_nonzero / size if size else 1.0
    dense_enough = zero_fraction >= thresholds.min_zero_fraction
    passed = is_csr and dense_enough
    problems = []
    if not is_csr:
        problems.append("X is not a CSR sparse matrix")
    if not dense_enough:
        problems.append(
            f"only {zero_fraction:.1%} of the values are zero, below the minimum of "
            f"{thresholds.min_zero_fraction:.0%}: a dense or imputed matrix, not raw counts?"
        )
    description = (
        f"X is CSR with {zero_fraction:.2%} zeros (minimum {thresholds.min_zero_fraction:.0%})."
        if passed
        else _sentence("; ".join(problems))
    )
    return CheckOutcome(
        name="sparsity",
        passed=passed,
        severity=Severity.ERROR,
        summary=f"{zero_fraction:.1%} zeros",
        description=description,
        metadata={
            "zero_fraction": round(zero_fraction, 6),
            "min_zero_fraction": thresholds.min_zero_fraction,
            "is_csr": is_csr,
            "nnz": n_nonzero,
        },
    )


def matrix_sparsity_outcome(X: Any, thresholds: Thresholds = Thresholds()) -> CheckOutcome:
    """:func:`sparsity_outcome` for an in-memory matrix (sparse or dense)."""
    n_nonzero = int(X.count_nonzero()) if sp.issparse(X) else int(np.count_nonzero(X))
    return sparsity_outcome(
        is_csr=sp.issparse(X) and X.format == "csr",
        n_nonzero=n_nonzero,
        shape=X.shape,
        thresholds=thresholds,
    )


def count_integrity_outcome(adata: ad.AnnData) -> CheckOutcome:
    """Counts finite, non-negative, whole; ``layers["counts"]`` equals ``X``; barcodes unique."""
    n_non_finite, n_negative, n_non_integer, examples = _value_problems(_stored_values(adata.X))
    counts = adata.layers.get(COUNTS_LAYER)
    layer_equal = counts is not None and matrices_equal(adata.X, counts)
    duplicated = adata.obs_names[adata.obs_names.duplicated()].unique()

    problems = []
    if n_non_finite:
        problems.append(f"{n_non_finite:,} NaN or infinite values")
    if n_negative:
        problems.append(f"{n_negative:,} negative values")
    if n_non_integer:
        shown = ", ".join(repr(float(v)) for v in examples)
        problems.append(f"{n_non_integer:,} non-integer values (e.g. {shown})")
    if counts is None:
        problems.append('no layers["counts"]')
    elif not layer_equal:
        problems.append('layers["counts"] differs from X')
    if len(duplicated):
        problems.append(
            f"{len(duplicated):,} duplicated barcodes (first: {', '.join(duplicated[:3])})"
        )
    passed = not problems
    description = (
        'All counts are finite non-negative integers, layers["counts"] equals X and the '
        f"{adata.n_obs:,} barcodes are unique."
        if passed
        else "Raw counts cannot be trusted: " + "; ".join(problems) + "."
    )
    return CheckOutcome(
        name="count_integrity",
        passed=passed,
        severity=Severity.ERROR,
        summary="ok" if passed else "; ".join(problems),
        description=description,
        metadata={
            "n_non_finite": n_non_finite,
            "n_negative": n_negative,
            "n_non_integer": n_non_integer,
            "counts_layer_present": counts is not None,
            "counts_layer_equals_X": bool(layer_equal),
            "n_duplicated_barcodes": len(duplicated),
            "first_duplicated_barcodes": [str(b) for b in duplicated[:EXAMPLES]],
        },
    )


def empty_cells_outcome(adata: ad.AnnData) -> CheckOutcome:
    """Cells whose total count is zero (a warning: they carry no information)."""
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    n_empty = int((totals == 0).sum())
    return CheckOutcome(
        name="empty_cells",
        passed=n_empty == 0,
        severity=Severity.WARN,
        summary=f"{n_empty:,} empty",
        description=(
            "No cell has zero total counts."
            if n_empty == 0
            else f"{n_empty:,} of {adata.n_obs:,} cells have zero total counts."
        ),
        metadata={
            "n_empty_cells": n_empty,
            "first_empty_cells": [str(b) for b in adata.obs_names[totals == 0][:EXAMPLES]],
        },
    )


def mt_genes_outcome(genes: Sequence[str]) -> CheckOutcome:
    """Mitochondrial (``MT-``) genes present (a warning: without them pct_counts_mt means 0)."""
    mt = [g for g in genes if g.startswith(MT_PREFIX)]
    return CheckOutcome(
        name="mt_genes",
        passed=bool(mt),
        severity=Severity.WARN,
        summary=f"{len(mt)} MT- genes",
        description=(
            f"{len(mt)} mitochondrial genes ({', '.join(mt[:3])}...)."
            if mt
            else "No MT- genes: pct_counts_mt is 0 for every cell and says nothing."
        ),
        metadata={"n_mt_genes": len(mt), "mt_genes": mt[:20]},
    )


def sample_outcomes(
    adata: ad.AnnData,
    reference_genes: Sequence[str],
    thresholds: Thresholds = Thresholds(),
    *,
    reference_name: str = "reference",
) -> list[CheckOutcome]:
    """All per-sample checks, in a fixed order."""
    genes = list(adata.var_names)
    return [
        cell_count_outcome(adata.n_obs, thresholds),
        gene_set_outcome(genes, reference_genes, reference_name=reference_name),
        matrix_sparsity_outcome(adata.X, thresholds),
        count_integrity_outcome(adata),
        empty_cells_outcome(adata),
        mt_genes_outcome(genes),
    ]


# --- merged checks ------------------------------------------------------------------------


def merged_outcomes(
    summary: MergeSummary,
    merged: H5adLayout,
    sample_genes: Mapping[str, Sequence[str]],
    thresholds: Thresholds = Thresholds(),
) -> list[CheckOutcome]:
    """All checks of the merged data, from the merge's summary and the written file's layout.

    ``sample_genes`` maps each merged sample's label to its gene names.
    """
    return [
        merged_cell_count_outcome(summary),
        merged_gene_set_outcome(merged.var_names, sample_genes),
        sparsity_outcome(
            is_csr=merged.x_encoding == "csr_matrix",
            n_nonzero=summary.nnz,
            shape=(summary.n_obs, summary.n_vars),
            thresholds=thresholds,
        ),
        counts_layer_outcome(summary),
        unique_obs_names_outcome(summary),
    ]


def protein_panel_outcome(panels: Mapping[str, Sequence[str] | None]) -> CheckOutcome:
    """Every sample with antibody counts has the same panel: same antibodies, same order.

    ``panels`` maps each merged sample's label to the antibodies of its
    ``obsm["protein_expression"]`` in order (:attr:`H5adLayout.protein_panel`), or None for a
    sample without one. The merge is ``ad.concat``'s inner join: it keeps only the antibodies
    common to all samples, so differing panels fail this check instead of losing antibodies
    silently. Samples without a panel do not fail it (the check is about the samples that
    have one), but the inner join then keeps no protein data, which the description says.
    Passes when no sample has a panel (an RNA-only study).
    """
    with_panel = {sample: list(panel) for sample, panel in panels.items() if panel is not None}
    without = [sample for sample, panel in panels.items() if panel is None]
    reference_sample, reference = next(iter(with_panel.items()), ("", []))
    common = set(reference).intersection(*with_panel.values())
    merged = [] if without else [antibody for antibody in reference if antibody in common]
    differing = {
        sample: difference
        for sample, panel in with_panel.items()
        if (difference := _panel_difference(panel, reference))
    }
    rows = []
    for sample, panel in panels.items():
        if panel is None:
            status = "no protein data"
        elif sample == reference_sample:
            status = "reference"
        else:
            status = "differs" if sample in differing else "same"
        rows.append(
            {
                "sample": sample,
                "n_antibodies": len(panel or []),
                "status": status,
                "difference": differing.get(sample, ""),
            }
        )
    dropped = bool(with_panel and without)  # the merge drops everyone's protein data
    passed = not differing

    if not with_panel:
        summary = "no protein data"
        description = f"No sample has antibody counts (obsm[{PROTEIN_KEY!r}])."
    else:
        parts = [f"{len(differing)} differing" if differing else f"{len(reference):,} antibodies"]
        if dropped:
            parts.append(f"{len(without)} without panel")
        summary = ", ".join(parts)
        sentences = []
        if differing:
            listed = _listed(f"{sample} ({difference})" for sample, difference in differing.items())
            sentences.append(
                f"Antibody panels differ from {reference_sample}'s {len(reference):,}: {listed}."
            )
        else:
            sentences.append(
                f"All {len(with_panel)} samples with antibody counts have the same panel of "
                f"{len(reference):,} antibodies, in the same order."
            )
        if dropped:
            verb = "has" if len(without) == 1 else "have"
            sentences.append(
                f"{_listed(without)} {verb} no antibody counts: the merge's inner join keeps "
                f"no obsm[{PROTEIN_KEY!r}] (merge the samples with a panel on their own to keep "
                "it)."
            )
        elif len(merged) < len(reference):
            sentences.append(
                f"The merge keeps only the {len(merged):,} antibodies common to all samples."
            )
        if differing:
            sentences.append(
                "Use one antibody panel (feature reference) for every sample, or merge the "
                "samples of another panel separately."
            )
        description = " ".join(sentences)
    return CheckOutcome(
        name="protein_panel",
        passed=passed,
        severity=Severity.ERROR,
        summary=summary,
        description=description,
        metadata={
            "n_samples": len(panels),
            "n_samples_with_panel": len(with_panel),
            "panel_size": len(reference),
            "reference_sample": reference_sample,
            "panel": reference,
            "n_antibodies_merged": len(merged),
            "samples_differing": list(differing),
            "samples_without_panel": without,
            "per_sample": rows,
        },
    )


def _panel_difference(panel: list[str], reference: list[str]) -> str:
    """How ``panel`` differs from ``reference``, in words; ``""`` when it is the same."""
    if panel == reference:
        return ""
    in_panel, in_reference = set(panel), set(reference)
    missing = [a for a in reference if a not in in_panel]
    extra = [a for a in panel if a not in in_reference]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {', '.join(missing[:3])}")
    if extra:
        parts.append(f"{len(extra)} extra: {', '.join(extra[:3])}")
    if parts:
        return "; ".join(parts)
    if len(panel) != len(reference):  # the same names, some repeated
        return f"the same antibodies in {len(panel)} columns instead of {len(reference)}"
    first = next(i for i, (a, b) in enumerate(zip(panel, reference, strict=True)) if a != b)
    return (
        f"same antibodies in another order, first at position {first + 1}: "
        f"{panel[first]} instead of {reference[first]}"
    )


def _listed(items: Iterable[str]) -> str:
    """The first :data:`EXAMPLES` items, comma-separated, and how many more."""
    items = list(items)
    more = f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else ""
    return ", ".join(items[:EXAMPLES]) + more


def merged_cell_count_outcome(summary: MergeSummary) -> CheckOutcome:
    """Cells in the merged data equal the sum over the samples it was built from."""
    expected = sum(sample.n_obs for sample in summary.samples)
    passed = summary.n_obs == expected
    return CheckOutcome(
        name="cell_count",
        passed=passed,
        severity=Severity.ERROR,
        summary=f"{summary.n_obs:,} cells",
        description=(
            f"{summary.n_obs:,} cells = the sum over {len(summary.samples)} samples."
            if passed
            else f"{summary.n_obs:,} cells, but the {len(summary.samples)} samples have "
            f"{expected:,}: cells were lost or duplicated."
        ),
        metadata={
            "n_cells": summary.n_obs,
            "sum_over_samples": expected,
            "per_sample": [
                {"sample": s.label, "n_cells": s.n_obs, "nnz": s.nnz} for s in summary.samples
            ],
        },
    )


def merged_gene_set_outcome(
    merged_genes: Sequence[str], sample_genes: Mapping[str, Sequence[str]]
) -> CheckOutcome:
    """The merged genes equal every sample's genes, names and order."""
    merged_genes = list(merged_genes)
    differing = {
        label: gene_set_outcome(genes, merged_genes, reference_name="merged")
        for label, genes in sample_genes.items()
        if list(genes) != merged_genes
    }
    passed = not differing
    return CheckOutcome(
        name="gene_set",
        passed=passed,
        severity=Severity.ERROR,
        summary=f"{len(merged_genes):,} genes" if passed else f"{len(differing)} samples differ",
        description=(
            f"The {len(merged_genes):,} merged genes equal each of the "
            f"{len(sample_genes)} samples' genes, in order."
            if passed
            else "Merged genes differ from: "
            + "; ".join(f"{label} ({o.summary})" for label, o in differing.items())
            + "."
        ),
        metadata={
            "n_genes": len(merged_genes),
            "genes_hash": gene_list_hash(merged_genes),
            "samples_differing": sorted(differing),
        },
    )


def counts_layer_outcome(summary: MergeSummary) -> CheckOutcome:
    """``layers["counts"]`` equals ``X``: same nnz, same sum, same checksum of the stored bytes."""
    same = {
        "nnz": summary.nnz == summary.counts_nnz,
        "sum": summary.x_sum == summary.counts_sum,
        "checksum": summary.x_checksum == summary.counts_checksum,
    }
    passed = all(same.values())
    return CheckOutcome(
        name="counts_layer",
        passed=passed,
        severity=Severity.ERROR,
        summary="equal" if passed else "differs: " + ", ".join(k for k, v in same.items() if not v),
        description=(
            f'layers["counts"] equals X: {summary.nnz:,} values summing to {summary.x_sum:,.0f}, '
            f"checksum {summary.x_checksum}."
            if passed
            else 'layers["counts"] differs from X in '
            + ", ".join(k for k, v in same.items() if not v)
            + "."
        ),
        metadata={
            "x_nnz": summary.nnz,
            "counts_nnz": summary.counts_nnz,
            "x_sum": summary.x_sum,
            "counts_sum": summary.counts_sum,
            "x_checksum": summary.x_checksum,
            "counts_checksum": summary.counts_checksum,
        },
    )


def unique_obs_names_outcome(summary: MergeSummary) -> CheckOutcome:
    """Every merged cell name (``<sample>-<barcode>``) occurs once."""
    n_dup = summary.n_duplicate_obs_names
    return CheckOutcome(
        name="unique_obs_names",
        passed=n_dup == 0,
        severity=Severity.ERROR,
        summary="unique" if n_dup == 0 else f"{n_dup:,} duplicates",
        description=(
            f"All {summary.n_obs:,} cell names are unique."
            if n_dup == 0
            else f"{n_dup:,} cell names occur more than once (first: "
            f"{', '.join(summary.duplicate_obs_names[:3])})."
        ),
        metadata={
            "n_duplicates": n_dup,
            "first_duplicates": list(summary.duplicate_obs_names[:EXAMPLES]),
        },
    )


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


#: Values per block in :func:`_value_problems`: temporaries stay in cache, no new memory.
_VALUE_BLOCK = 1 << 18


def _value_problems(values: np.ndarray) -> tuple[int, int, int, list[float]]:
    """NaN or infinite, negative and (finite) non-integer values, and up to 3 of the latter.

    Counted block by block: over a whole matrix, each test would allocate a temporary as
    large as the data (~0.3 s for a 17M-value sample, most of it fresh pages).
    """
    if values.dtype.kind in "biu":  # integer counts: only the sign can be wrong
        return 0, int(np.count_nonzero(values < 0)) if values.dtype.kind == "i" else 0, 0, []
    n_non_finite = n_negative = n_non_integer = 0
    examples: list[float] = []
    for start in range(0, values.size, _VALUE_BLOCK):
        block = values[start : start + _VALUE_BLOCK]
        finite = np.isfinite(block)
        n_non_finite += block.size - int(np.count_nonzero(finite))
        n_negative += int(np.count_nonzero(block < 0))
        with np.errstate(invalid="ignore"):
            fractional = finite & (block != np.rint(block))
        if n := int(np.count_nonzero(fractional)):
            n_non_integer += n
            examples.extend(block[fractional][: 3 - len(examples)].tolist())
    return n_non_finite, n_negative, n_non_integer, examples


def _stored_values(X: Any) -> np.ndarray:
    return np.asarray(X.data if sp.issparse(X) else X).ravel()
