"""Checks attribute failures to the right sample and keep failed samples out of the merge."""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sc_assets.checks import MERGED_ADATA, SAMPLE_ADATA, SAMPLE_CHECKS
from sc_assets.core.count_matrix_writer import write_count_matrix
from sc_assets.report import _row, _sample_rows, write_report
from sc_assets_tests.conftest import copy_samples, ingest, pandas_reference, run

GOOD = ["GSM5320459_Ctrl1", "GSM5320460_Ctrl2", "GSM5320461_Ctrl3"]
MISSING_GENES = "GSM5320462_Ctrl4"
DENSE = "GSM5320463_Pre1"


def write_missing_genes(demo_files, data_dir, n_missing=25):
    X, barcodes, genes = pandas_reference(demo_files[MISSING_GENES])
    keep = np.r_[0:100, 100 + n_missing : len(genes)]  # drop 25 genes in the middle
    path = data_dir / f"{MISSING_GENES}_count_matrix.csv.gz"
    write_count_matrix(path, X[:, keep], [genes[i] for i in keep], barcodes)
    return [genes[i] for i in range(100, 100 + n_missing)]


def write_dense(demo_files, data_dir):
    X, barcodes, genes = pandas_reference(demo_files[DENSE])
    dense = X.toarray() + 1  # every value non-zero: not raw single-cell counts
    write_count_matrix(data_dir / f"{DENSE}_count_matrix.csv.gz", dense, genes, barcodes)


def evaluations(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def mixed(module_platform, demo_files):
    """Three good samples, one missing 25 genes, one dense: the issue's scenario."""
    data_dir = module_platform.settings.data_dir
    copy_samples(demo_files, data_dir, GOOD)
    missing = write_missing_genes(demo_files, data_dir)
    write_dense(demo_files, data_dir)
    samples, merge = ingest(module_platform, [*GOOD, MISSING_GENES, DENSE])
    return samples, merge, missing


def test_each_failure_is_attributed_to_its_partition(mixed):
    samples, _, missing = mixed
    for key in GOOD:
        assert all(e.passed for e in evaluations(samples[key]).values()), key

    gene_set = evaluations(samples[MISSING_GENES])["gene_set"]
    assert not gene_set.passed and gene_set.partition == MISSING_GENES
    assert gene_set.severity.value == "ERROR"
    assert gene_set.metadata["n_missing"].value == 25
    assert gene_set.metadata["first_missing"].value == missing[:10]
    assert gene_set.description.startswith("25 genes missing (first: ")
    assert evaluations(samples[MISSING_GENES])["sparsity"].passed

    sparsity = evaluations(samples[DENSE])["sparsity"]
    assert not sparsity.passed and sparsity.partition == DENSE
    assert sparsity.metadata["zero_fraction"].value == 0.0
    assert sparsity.description.startswith("Only 0.0% of the values are zero")
    assert evaluations(samples[DENSE])["gene_set"].passed


def test_the_merge_refuses_and_names_the_samples_and_checks(mixed, module_platform):
    _, merge, _ = mixed
    instance, settings = module_platform.instance, module_platform.settings
    assert not merge.success
    (failure,) = [e for e in merge.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert "2 of 5 samples cannot enter the merge" in description
    assert f"{MISSING_GENES}: gene_set failed: 25 genes missing" in description
    assert f"{DENSE}: sparsity failed: Only 0.0% of the values are zero" in description
    assert instance.get_latest_materialization_event(MERGED_ADATA) is None
    assert not Path(settings.storage_dir, "merged_adata.h5ad").exists()


def test_the_merge_is_built_once_bad_samples_are_removed_or_fixed(platform, demo_files):
    data_dir = platform.settings.data_dir
    copy_samples(demo_files, data_dir, GOOD[:2])
    write_missing_genes(demo_files, data_dir)
    write_dense(demo_files, data_dir)
    _, merge = ingest(platform, [*GOOD[:2], MISSING_GENES, DENSE])
    assert not merge.success

    platform.instance.delete_dynamic_partition("samples", DENSE)  # removed
    copy_samples(demo_files, data_dir, [MISSING_GENES])  # fixed: the good file
    assert run(platform, "ingest_sample", MISSING_GENES).success
    merge = run(platform, "merge_samples")
    assert merge.success
    table = evaluations(merge)["cell_count"].metadata["per_sample"].value
    assert [row.data["sample"] for row in table.records] == ["Ctrl1", "Ctrl2", "Ctrl4"]


def test_too_few_cells_fail_cell_count(platform, demo_files):
    settings = platform.settings
    copy_samples(demo_files, settings.data_dir, GOOD[:1])
    X, barcodes, genes = pandas_reference(demo_files[GOOD[1]])
    key = GOOD[1]
    write_count_matrix(
        settings.data_dir / f"{key}_count_matrix.csv.gz",
        sp.csr_matrix(X[:50]),
        genes,
        barcodes[:50],
    )
    samples, merge = ingest(platform, [GOOD[0], key])
    cell_count = evaluations(samples[key])["cell_count"]
    assert not cell_count.passed and cell_count.metadata["n_cells"].value == 50
    assert "fewer than the minimum of 100" in cell_count.description
    assert not merge.success


def test_the_report_lists_both_bad_samples_with_the_reason_and_the_plots(
    mixed, module_platform, tmp_path
):
    written = write_report(module_platform.instance, tmp_path)
    assert not written.ok  # exit status 1 for `sc-assets report`
    markdown = written.markdown_path.read_text()
    assert f"- {MISSING_GENES}: gene_set — 25 genes missing (first: " in markdown
    assert f"- {DENSE}: sparsity — Only 0.0% of the values are zero" in markdown
    assert "merged_adata: latest run failed: merged_adata not built: 2 of 5 samples" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {MISSING_GENES} |"))
    assert "❌ fail (25 missing, 0 extra)" in row and row.count("✅ pass") == 5
    for key in [*GOOD, MISSING_GENES, DENSE]:
        assert f"![QC plots of {key}](plots/{key}.png)" in markdown
        assert (tmp_path / "plots" / f"{key}.png").read_bytes().startswith(b"\x89PNG")


def test_the_report_reads_all_samples_at_once_as_it_reads_each(mixed, module_platform):
    """The report's bulk queries give every sample the row its own queries give."""
    instance = module_platform.instance
    keys = sorted(instance.get_dynamic_partitions("samples"))
    rows = {row.name: row for row in _sample_rows(instance, keys)}
    for key in keys:
        assert rows[key] == _row(instance, SAMPLE_ADATA, list(SAMPLE_CHECKS), key), key
    assert rows[DENSE].checks["sparsity"].status == "fail"
    assert rows[GOOD[0]].plot_png.startswith(b"\x89PNG")
