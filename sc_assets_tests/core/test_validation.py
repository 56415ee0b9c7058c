import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sc_assets.core import validation
from sc_assets.core.validation import (
    Severity,
    Thresholds,
    cell_count_outcome,
    count_integrity_outcome,
    empty_cells_outcome,
    gene_list_hash,
    gene_set_outcome,
    matrix_sparsity_outcome,
    mt_genes_outcome,
    protein_panel_outcome,
    sparsity_outcome,
)

GENES = [f"G{i}" for i in range(20)] + ["MT-CO1", "MT-ND1"]


def counts_adata(n_cells=200, *, density=0.05, seed=0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = sp.random(
        n_cells,
        len(GENES),
        density=density,
        format="csr",
        dtype=np.float32,
        random_state=rng,
        data_rvs=lambda n: rng.integers(1, 20, n),
    )
    X[:, 0] = 1  # no empty cells
    X = sp.csr_matrix(X)
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=[f"BC{i}-1" for i in range(n_cells)]),
        var=pd.DataFrame(index=GENES),
    )
    adata.layers["counts"] = X.copy()
    return adata


@pytest.mark.parametrize(
    ("n", "passed", "phrase"),
    [
        (100, True, "within"),
        (99, False, "empty or failed library"),
        (100_001, False, "unfiltered matrix"),
        (100_000, True, "within"),
    ],
)
def test_cell_count_bounds(n, passed, phrase):
    outcome = cell_count_outcome(n)
    assert outcome.passed is passed
    assert outcome.severity is Severity.ERROR
    assert phrase in outcome.description
    assert outcome.metadata == {"n_cells": n, "min_cells": 100, "max_cells": 100_000}


def test_cell_count_uses_configured_thresholds():
    assert not cell_count_outcome(50, Thresholds(min_cells=60)).passed
    assert cell_count_outcome(50, Thresholds(min_cells=10)).passed


def test_gene_set_identical():
    outcome = gene_set_outcome(GENES, GENES)
    assert outcome.passed and outcome.status == "pass"
    assert outcome.metadata["genes_hash"] == outcome.metadata["reference_hash"]


def test_gene_set_reports_missing_and_extra_genes():
    sample = [g for g in GENES if g not in ("G3", "G7")] + ["NEW1"]
    outcome = gene_set_outcome(sample, GENES)
    assert not outcome.passed and outcome.status == "fail"
    assert outcome.metadata["n_missing"] == 2
    assert outcome.metadata["first_missing"] == ["G3", "G7"]
    assert outcome.metadata["n_extra"] == 1
    assert outcome.metadata["first_extra"] == ["NEW1"]
    assert "2 genes missing (first: G3, G7)" in outcome.description
    assert outcome.summary == "2 missing, 1 extra"


def test_gene_set_catches_a_different_order():
    swapped = [GENES[1], GENES[0], *GENES[2:]]
    outcome = gene_set_outcome(swapped, GENES)
    assert not outcome.passed
    assert outcome.summary == "order differs"
    assert "first difference at position 0" in outcome.description


def test_gene_list_hash_is_order_sensitive():
    assert gene_list_hash(["A", "B"]) != gene_list_hash(["B", "A"])
    assert gene_list_hash(["A", "B"]) == gene_list_hash(("A", "B"))


def test_sparsity_passes_on_sparse_counts_and_fails_on_a_dense_matrix():
    adata = counts_adata()
    assert matrix_sparsity_outcome(adata.X).passed
    dense = np.ones((10, 10), dtype=np.float32)
    outcome = matrix_sparsity_outcome(dense)
    assert not outcome.passed
    assert outcome.metadata["is_csr"] is False
    assert outcome.metadata["zero_fraction"] == 0.0
    assert "not a CSR" in outcome.description


def test_sparsity_threshold_is_inclusive_and_counts_explicit_zeros_as_zeros():
    assert sparsity_outcome(is_csr=True, n_nonzero=10, shape=(10, 10)).passed  # exactly 0.90
    assert not sparsity_outcome(is_csr=True, n_nonzero=11, shape=(10, 10)).passed
    X = sp.csr_matrix(np.eye(10, dtype=np.float32))
    X.data[:] = 0  # stored, but zero
    assert matrix_sparsity_outcome(X).metadata["zero_fraction"] == 1.0


def test_count_integrity_passes_on_raw_counts():
    outcome = count_integrity_outcome(counts_adata())
    assert outcome.passed, outcome.description


@pytest.mark.parametrize(
    ("value", "field", "phrase"),
    [
        (-1.0, "n_negative", "negative"),
        (1.5, "n_non_integer", "non-integer"),
        (np.nan, "n_non_finite", "NaN or infinite"),
        (np.inf, "n_non_finite", "NaN or infinite"),
    ],
)
def test_count_integrity_rejects_values_that_are_not_counts(value, field, phrase):
    adata = counts_adata()
    adata.X.data[3] = value
    adata.layers["counts"] = adata.X.copy()
    outcome = count_integrity_outcome(adata)
    assert not outcome.passed
    assert outcome.metadata[field] == 1
    assert phrase in outcome.description


def test_count_integrity_counts_every_bad_value_across_blocks(monkeypatch):
    monkeypatch.setattr(validation, "_VALUE_BLOCK", 7)  # many blocks, bad values in several
    adata = counts_adata()
    adata.X.data[[1, 9, 20]] = [0.5, 2.25, -3.0]
    adata.X.data[15] = np.nan
    adata.layers["counts"] = adata.X.copy()
    outcome = count_integrity_outcome(adata)
    assert [outcome.metadata[k] for k in ("n_non_finite", "n_negative", "n_non_integer")] == [
        1,
        1,
        2,
    ]
    assert "(e.g. 0.5, 2.25)" in outcome.description


def test_count_integrity_of_integer_counts_checks_the_sign():
    adata = counts_adata()
    adata.X = adata.X.astype(np.int64)
    adata.X.data[2] = -4
    adata.layers["counts"] = adata.X.copy()
    outcome = count_integrity_outcome(adata)
    assert outcome.metadata["n_negative"] == 1 and outcome.metadata["n_non_integer"] == 0


def test_count_integrity_rejects_a_counts_layer_that_differs_or_is_missing():
    adata = counts_adata()
    adata.layers["counts"].data[0] += 1
    outcome = count_integrity_outcome(adata)
    assert not outcome.passed and outcome.metadata["counts_layer_equals_X"] is False
    del adata.layers["counts"]
    outcome = count_integrity_outcome(adata)
    assert outcome.metadata["counts_layer_present"] is False
    assert 'no layers["counts"]' in outcome.description


def test_count_integrity_rejects_duplicated_barcodes():
    adata = counts_adata()
    names = list(adata.obs_names)
    names[5] = names[2]
    adata.obs_names = names
    outcome = count_integrity_outcome(adata)
    assert not outcome.passed
    assert outcome.metadata["n_duplicated_barcodes"] == 1
    assert outcome.metadata["first_duplicated_barcodes"] == ["BC2-1"]


def test_empty_cells_is_a_warning_with_the_number():
    adata = counts_adata()
    assert empty_cells_outcome(adata).passed
    X = adata.X.tolil()
    X[[4, 9], :] = 0
    adata.X = sp.csr_matrix(X)
    outcome = empty_cells_outcome(adata)
    assert not outcome.passed and outcome.status == "warn"
    assert outcome.metadata["n_empty_cells"] == 2
    assert outcome.metadata["first_empty_cells"] == ["BC4-1", "BC9-1"]


def test_mt_genes_warns_when_absent():
    assert mt_genes_outcome(GENES).metadata["n_mt_genes"] == 2
    outcome = mt_genes_outcome(GENES[:20])
    assert not outcome.passed and outcome.severity is Severity.WARN
    assert "pct_counts_mt" in outcome.description


PANEL = ["CD3", "CD4", "CD8a", "CD14", "CD19"]


def test_protein_panel_passes_without_protein_data():
    outcome = protein_panel_outcome({"Ctrl1": None, "Pre1": None})
    assert outcome.passed and outcome.name == "protein_panel"
    assert outcome.severity is Severity.ERROR
    assert outcome.summary == "no protein data"
    assert outcome.description == "No sample has antibody counts (obsm['protein_expression'])."
    assert outcome.metadata["n_samples_with_panel"] == 0
    assert outcome.metadata["panel_size"] == 0
    assert protein_panel_outcome({}).passed


def test_protein_panel_passes_when_every_sample_has_the_same_panel():
    outcome = protein_panel_outcome({"Ctrl1": PANEL, "Pre1": tuple(PANEL), "Post1": PANEL})
    assert outcome.passed and outcome.status == "pass"
    assert outcome.summary == "5 antibodies"
    assert outcome.description == (
        "All 3 samples with antibody counts have the same panel of 5 antibodies, in the same order."
    )
    assert outcome.metadata["n_samples_with_panel"] == 3
    assert outcome.metadata["panel_size"] == 5
    assert outcome.metadata["panel"] == PANEL
    assert [row["status"] for row in outcome.metadata["per_sample"]] == [
        "reference",
        "same",
        "same",
    ]


def test_protein_panel_names_the_samples_that_differ():
    outcome = protein_panel_outcome(
        {
            "Ctrl1": PANEL,
            "Pre1": ["CD3", "CD4", "CD8a", "CD14", "CD56"],  # CD19 -> CD56
            "Pre2": PANEL,
            "Post1": ["CD4", "CD3", "CD8a", "CD14", "CD19"],  # another order
        }
    )
    assert not outcome.passed and outcome.status == "fail"
    assert outcome.summary == "2 differing"
    assert outcome.description == (
        "Antibody panels differ from Ctrl1's 5: Pre1 (1 missing: CD19; 1 extra: CD56), "
        "Post1 (same antibodies in another order, first at position 1: CD4 instead of CD3). "
        "The merge keeps only the 4 antibodies common to all samples. "
        "Use one antibody panel (feature reference) for every sample, or merge the samples of "
        "another panel separately."
    )
    metadata = outcome.metadata
    assert metadata["samples_differing"] == ["Pre1", "Post1"]
    assert metadata["samples_without_panel"] == []
    assert metadata["n_antibodies_merged"] == 4
    assert metadata["per_sample"][1] == {
        "sample": "Pre1",
        "n_antibodies": 5,
        "status": "differs",
        "difference": "1 missing: CD19; 1 extra: CD56",
    }
    assert metadata["per_sample"][2]["status"] == "same"


def test_protein_panel_passes_but_says_so_when_some_samples_have_none():
    # The check is about the samples that have a panel; that the merge then keeps no protein
    # data (ad.concat's inner join) is said, not failed.
    outcome = protein_panel_outcome({"Ctrl1": PANEL, "Ctrl2": None, "Pre1": PANEL, "Pre2": None})
    assert outcome.passed
    assert outcome.summary == "5 antibodies, 2 without panel"
    assert outcome.description == (
        "All 2 samples with antibody counts have the same panel of 5 antibodies, in the same "
        "order. Ctrl2, Pre2 have no antibody counts: the merge's inner join keeps no "
        "obsm['protein_expression'] (merge the samples with a panel on their own to keep it)."
    )
    assert outcome.metadata["samples_without_panel"] == ["Ctrl2", "Pre2"]
    assert outcome.metadata["n_antibodies_merged"] == 0
    assert outcome.metadata["per_sample"][1] == {
        "sample": "Ctrl2",
        "n_antibodies": 0,
        "status": "no protein data",
        "difference": "",
    }
    one = protein_panel_outcome({"Ctrl1": None, "Pre1": PANEL[:2], "Post1": PANEL})
    assert one.summary == "1 differing, 1 without panel"
    assert not one.passed
    assert "Ctrl1 has no antibody counts: the merge's inner join keeps no" in one.description
    assert one.metadata["reference_sample"] == "Pre1"  # the first sample with a panel


def test_protein_panel_lists_at_most_examples_samples(monkeypatch):
    monkeypatch.setattr(validation, "EXAMPLES", 2)
    panels = {"S0": PANEL} | {f"S{i}": PANEL[:3] for i in range(1, 5)}
    outcome = protein_panel_outcome(panels)
    assert "S1 (2 missing: CD14, CD19), S2 (2 missing: CD14, CD19) and 2 more." in (
        outcome.description
    )
    assert outcome.metadata["samples_differing"] == ["S1", "S2", "S3", "S4"]
