"""The h5ad reader: the raw counts from wherever a collaborator put them, or a clear error."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sc_assets.core.errors import CountMatrixError
from sc_assets.core.h5ad import write_h5ad
from sc_assets.core.qc import csr_sums
from sc_assets.core.readers import (
    detect_layout,
    read_count_matrix,
    read_gene_names,
    read_sample,
    tenx_h5,
)
from sc_assets.core.readers import h5ad as h5ad_reader
from sc_assets.core.readers._source import read_head
from sc_assets.core.samples import SampleSpec
from sc_assets.core.tenx_writers import write_10x_h5

BARCODES = [f"AAAC{i:04d}-1" for i in range(6)]
GENES = ["CD3E", "MT-CO1", "ACTB", "TBCE", "TBCE-1"]
COUNTS = np.array(
    [
        [1, 0, 3, 0, 2],
        [0, 0, 0, 0, 0],
        [4, 7, 0, 1, 0],
        [0, 2, 2, 0, 9],
        [5, 0, 0, 0, 1],
        [0, 1, 0, 6, 0],
    ]
)
NORMALIZED = np.log1p(COUNTS / np.maximum(COUNTS.sum(axis=1, keepdims=True), 1) * 1e4)


def obs() -> pd.DataFrame:
    return pd.DataFrame(
        {"donor": pd.Categorical(["d1", "d1", "d2", "d2", "d3", "d3"]), "score": np.arange(6.0)},
        index=BARCODES,
    )


def var(genes: list[str] = GENES) -> pd.DataFrame:
    return pd.DataFrame({"gene_ids": [f"ENSG{i}" for i in range(len(genes))]}, index=genes)


def write(path: Path, X, **kwargs) -> Path:
    adata = ad.AnnData(X=X, obs=kwargs.pop("obs", obs()), var=kwargs.pop("var", var()), **kwargs)
    adata.write_h5ad(path, compression=kwargs.get("compression"))
    return path


def csr(values: np.ndarray, dtype=np.float32) -> sp.csr_matrix:
    return sp.csr_matrix(values.astype(dtype))


def assert_counts(adata: ad.AnnData, counts_from: str, genes: list[str] = GENES) -> None:
    assert adata.uns["sc_assets"] == {"layout": "h5ad", "counts_from": counts_from}
    assert adata.X.dtype == np.float32 and adata.X.indices.dtype == np.int32
    assert adata.X.has_canonical_format
    assert np.array_equal(adata.X.toarray(), COUNTS[:, : len(genes)])
    assert np.array_equal(adata.layers["counts"].toarray(), COUNTS[:, : len(genes)])
    assert adata.layers["counts"].data is not adata.X.data
    assert list(adata.obs_names) == BARCODES
    assert list(adata.var_names) == genes
    sums = csr_sums(adata.X, adata.var["mt"].to_numpy())
    assert np.array_equal(adata.obs["total_counts"], sums.cell_total)
    assert np.array_equal(adata.obs["total_counts_mt"], sums.cell_flagged_total)
    assert np.array_equal(adata.var["n_cells_by_counts"], sums.gene_nnz)
    assert np.array_equal(adata.var["total_counts"], sums.gene_total)


def raises(path: Path, *phrases: str, **options) -> str:
    with pytest.raises(CountMatrixError) as raised:
        read_count_matrix(path, **options)
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    for phrase in phrases:
        assert phrase in message
    return message


# --- where the counts are ----------------------------------------------------------------------


def test_the_counts_layer_of_a_typical_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.h5ad", csr(NORMALIZED), layers={"counts": csr(COUNTS)})
    adata = read_count_matrix(path)
    assert_counts(adata, "layers['counts']")
    assert list(adata.var["gene_ids"]) == [f"ENSG{i}" for i in range(5)]


def test_the_layer_the_samplesheet_names(tmp_path: Path) -> None:
    layers = {"spliced": csr(COUNTS), "counts": csr(COUNTS * 2)}
    path = write(tmp_path / "a.h5ad", csr(NORMALIZED), layers=layers)
    assert_counts(read_count_matrix(path, counts_layer="spliced"), "layers['spliced']")
    spec = SampleSpec("s1", path, counts_layer="spliced")
    assert_counts(read_sample(spec), "layers['spliced']")


def test_a_layer_named_but_absent_lists_the_layers(tmp_path: Path) -> None:
    layers = {"spliced": csr(COUNTS), "unspliced": csr(COUNTS)}
    path = write(tmp_path / "a.h5ad", csr(NORMALIZED), layers=layers)
    raises(
        path,
        "has no layer 'raw_counts' (the samplesheet's counts_layer): "
        "its layers are spliced, unspliced",
        counts_layer="raw_counts",
    )
    bare = write(tmp_path / "b.h5ad", csr(COUNTS))
    raises(bare, "it has no layers", counts_layer="counts")


def test_raw_when_it_holds_integers(tmp_path: Path) -> None:
    full = ad.AnnData(X=csr(COUNTS), obs=obs(), var=var())
    adata = full[:, [0, 2]].copy()
    adata.X = csr(NORMALIZED[:, [0, 2]])
    adata.raw = full
    adata.write_h5ad(tmp_path / "a.h5ad")
    result = read_count_matrix(tmp_path / "a.h5ad")
    assert_counts(result, "raw")
    assert list(result.var["gene_ids"]) == [f"ENSG{i}" for i in range(5)]
    spec = SampleSpec("s1", tmp_path / "a.h5ad")
    assert read_gene_names(spec) == GENES


def test_x_when_it_holds_integers(tmp_path: Path) -> None:
    path = write(tmp_path / "a.h5ad", csr(COUNTS))
    assert_counts(read_count_matrix(path), "X")


def test_raw_with_non_integers_falls_through_to_x(tmp_path: Path) -> None:
    adata = ad.AnnData(X=csr(NORMALIZED), obs=obs(), var=var())
    adata.raw = adata
    adata.X = csr(COUNTS)
    adata.write_h5ad(tmp_path / "a.h5ad")
    assert_counts(read_count_matrix(tmp_path / "a.h5ad"), "X")
    assert read_gene_names(SampleSpec("s1", tmp_path / "a.h5ad")) == GENES


def test_no_counts_anywhere_says_where_it_looked_and_what_it_found(tmp_path: Path) -> None:
    path = write(tmp_path / "a.h5ad", csr(NORMALIZED), layers={"spliced": csr(NORMALIZED)})
    first = np.float32(NORMALIZED[0, 0])
    raises(
        path,
        "no raw counts found: layers['counts'] absent (layers: spliced); raw absent; "
        f"X holds non-integers (e.g. {np.format_float_positional(first)}): name the layer with "
        "raw counts in the samplesheet's counts_layer column",
    )
    with pytest.raises(CountMatrixError, match="no raw counts found"):
        read_gene_names(SampleSpec("s1", path))


def test_negative_values_are_not_counts(tmp_path: Path) -> None:
    scaled = COUNTS - 2
    path = write(tmp_path / "a.h5ad", scaled.astype(np.float32))
    raises(path, "X holds negative values (e.g. -1)")


def test_the_counts_layer_must_hold_counts(tmp_path: Path) -> None:
    path = write(tmp_path / "a.h5ad", csr(COUNTS), layers={"counts": csr(NORMALIZED)})
    raises(
        path,
        "layers['counts'], entry 1 (cell AAAC0000-1, gene CD3E): count ",
        "is not a whole number",
    )


# --- annotations and storage -------------------------------------------------------------------


def test_the_files_own_obs_columns_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path / "a.h5ad", csr(COUNTS))
    adata = read_count_matrix(path)
    assert list(adata.obs["donor"]) == ["d1", "d1", "d2", "d2", "d3", "d3"]
    assert isinstance(adata.obs["donor"].dtype, pd.CategoricalDtype)
    assert list(adata.obs["score"]) == [0, 1, 2, 3, 4, 5]
    assert "total_counts" in adata.obs


@pytest.mark.parametrize(
    "X",
    [
        COUNTS.astype(np.float32),
        COUNTS.astype(np.int64),
        sp.csc_matrix(COUNTS.astype(np.float32)),
        csr(COUNTS, np.int64),
        csr(COUNTS, np.float64),
        csr(COUNTS, np.uint16),
    ],
    ids=["dense", "dense_int64", "csc", "csr_int64", "csr_float64", "csr_uint16"],
)
def test_any_storage_of_x(tmp_path: Path, X) -> None:
    path = write(tmp_path / "a.h5ad", X)
    assert_counts(read_count_matrix(path), "X")


def test_a_compressed_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    big = sp.random(300, 5, 0.5, format="csr", random_state=rng, dtype=np.float32)
    big.data = np.ceil(big.data * 20)
    barcodes = [f"C{i}" for i in range(300)]
    adata = ad.AnnData(X=big, obs=pd.DataFrame(index=barcodes), var=var())
    adata.write_h5ad(tmp_path / "a.h5ad", compression="gzip")
    result = read_count_matrix(tmp_path / "a.h5ad")
    assert np.array_equal(result.X.toarray(), big.toarray())


def test_a_layer_linked_to_x_as_the_platform_writes_it(tmp_path: Path) -> None:
    adata = ad.AnnData(X=csr(COUNTS), obs=obs(), var=var())
    adata.layers["counts"] = adata.X.copy()
    assert write_h5ad(adata, tmp_path / "a.h5ad") == ["counts"]
    assert_counts(read_count_matrix(tmp_path / "a.h5ad"), "layers['counts']")


def test_dense_with_a_fraction_names_the_cell_and_gene(tmp_path: Path) -> None:
    values = COUNTS.astype(np.float64)
    values[3, 2] = 0.5
    path = write(tmp_path / "a.h5ad", csr(COUNTS), layers={"counts": values})
    raises(path, "layers['counts'], cell AAAC0003-1, gene ACTB: count 0.5 is not a whole number")


def test_csc_with_a_negative_count_names_the_entry(tmp_path: Path) -> None:
    values = COUNTS.copy()
    values[2, 1] = -4
    path = write(tmp_path / "a.h5ad", csr(COUNTS), layers={"counts": sp.csc_matrix(values)})
    raises(path, "layers['counts'], entry 4 (cell AAAC0002-1, gene MT-CO1): count -4 is negative")


def test_a_gene_twice_in_a_cell(tmp_path: Path) -> None:
    path = write(tmp_path / "a.h5ad", csr(NORMALIZED), layers={"counts": csr(COUNTS)})
    with h5py.File(path, "r+") as f:
        indices = f["layers/counts/indices"]
        indices[1] = indices[0]
    raises(
        path,
        "layers['counts'], entries 1 and 2 (cell AAAC0000-1, gene CD3E): "
        "the same feature twice in one cell",
    )


def test_a_matrix_that_does_not_fit_obs_and_var(tmp_path: Path) -> None:
    path = write(tmp_path / "a.h5ad", csr(COUNTS))
    with h5py.File(path, "r+") as f:
        f["X"].attrs["shape"] = np.array([6, 4])
    raises(path, "X is 6 x 4, but obs and var list 6 cells and 5 genes")


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_a_repeated_barcode(tmp_path: Path) -> None:
    repeated = obs()
    repeated.index = [*BARCODES[:5], BARCODES[0]]
    path = write(tmp_path / "a.h5ad", csr(COUNTS), obs=repeated)
    raises(path, f"barcode '{BARCODES[0]}' appears twice (cells 1 and 6)")


def test_feature_types_split_as_for_cell_ranger(tmp_path: Path) -> None:
    features = var()
    features["feature_types"] = pd.Categorical(
        ["Gene Expression", "Gene Expression", "Antibody Capture", "Gene Expression", "Custom"]
    )
    path = write(tmp_path / "a.h5ad", csr(COUNTS), var=features)
    adata = read_count_matrix(path)
    assert list(adata.var_names) == ["CD3E", "MT-CO1", "TBCE"]
    assert adata.obsm["protein_expression"]["ACTB"].tolist() == [3, 0, 0, 2, 0, 0]
    assert adata.uns["sc_assets"]["dropped_feature_types"] == {"Custom": 1}
    assert read_gene_names(SampleSpec("s1", path)) == ["CD3E", "MT-CO1", "TBCE"]


def test_an_anndata_file_from_before_0_7(tmp_path: Path) -> None:
    path = tmp_path / "old.h5ad"
    with h5py.File(path, "w") as f:
        f["X"] = COUNTS.astype(np.float32)
        f["obs"] = np.array([(b.encode(),) for b in BARCODES], dtype=[("index", "S12")])
        f["var"] = np.array([(g.encode(),) for g in GENES], dtype=[("index", "S6")])
    raises(path, "written by anndata before 0.7", "write it again")


def test_a_truncated_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.h5ad", csr(COUNTS))
    truncated = tmp_path / "t.h5ad"
    truncated.write_bytes(path.read_bytes()[:3000])
    raises(truncated, "truncated or damaged")


# --- detection -------------------------------------------------------------------------------


def test_detect_tells_h5ad_from_cell_ranger(tmp_path: Path) -> None:
    path = write(tmp_path / "sample.data", csr(COUNTS), layers={"counts": csr(COUNTS)})
    source = detect_layout(path)
    assert source.layout == "h5ad"
    assert source.detail == "an AnnData file (X: csr_matrix 6 x 5; layers: counts)"
    cell_ranger = tmp_path / "m.h5"
    write_10x_h5(cell_ranger, COUNTS, BARCODES, [f"E{i}" for i in range(5)], GENES)
    assert detect_layout(cell_ranger).layout == "10x_h5"
    assert h5ad_reader.detect(cell_ranger, read_head(cell_ranger)) is None
    assert tenx_h5.detect(path, read_head(path)) is None
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["something"] = np.arange(3)
    assert h5ad_reader.detect(other, read_head(other)) is None
    with pytest.raises(CountMatrixError, match="neither Cell Ranger's nor AnnData's layout"):
        detect_layout(other)


def test_the_format_can_be_insisted_on(tmp_path: Path) -> None:
    path = write(tmp_path / "a.h5ad", csr(COUNTS))
    assert read_count_matrix(path, format="h5ad").shape == (6, 5)
    with pytest.raises(
        CountMatrixError, match=r"the format is given as 10x_h5, but this is an AnnData"
    ):
        read_count_matrix(path, format="10x_h5")
