"""merge_h5ad writes what anndata.concat gives in memory, block by block, and says what it wrote."""

from __future__ import annotations

import zlib
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sc_assets.core import merge
from sc_assets.core.merge import MergeSummary, merge_h5ad

GENES = [f"G{i:02d}" for i in range(30)] + ["MT-CO1", "MT-ND1"]
PANEL = ["CD3", "CD4", "CD8a", "CD14", "CD19", "HLA-DR"]


def make_sample(
    sample: str,
    genes: list[str] = GENES,
    *,
    n_cells: int = 40,
    seed: int = 0,
    barcodes: list[str] | None = None,
    panel: list[str] | None = None,
) -> ad.AnnData:
    """A small per-sample AnnData shaped like the platform's (raw counts, QC columns).

    With a ``panel``, CITE-seq's antibody counts in ``obsm["protein_expression"]``.
    """
    rng = np.random.default_rng(seed)
    X = sp.random(
        n_cells,
        len(genes),
        density=0.3,
        format="csr",
        dtype=np.float32,
        random_state=rng,
        data_rvs=lambda k: rng.integers(1, 6, k),
    )
    obs = pd.DataFrame(
        {
            "sample_id": np.full(n_cells, f"GSM{seed}", dtype=object),
            "condition": pd.Categorical([sample.rstrip("0123456789")] * n_cells),
            "donor": np.full(n_cells, seed, dtype=np.int64),
            "sample": np.full(n_cells, sample, dtype=object),
            "total_counts": np.asarray(X.sum(axis=1)).ravel(),
            "n_genes_by_counts": np.diff(X.indptr).astype(np.int32),
            "pct_counts_mt": rng.random(n_cells),
            "high_mt": rng.random(n_cells) > 0.9,
            # Unique per cell, so write_h5ad keeps it a string column (not a categorical).
            "well": np.array([f"{sample}:w{i}" for i in range(n_cells)], dtype=object),
        },
        index=barcodes if barcodes is not None else [f"BC{i:04d}-1" for i in range(n_cells)],
    )
    var = pd.DataFrame(
        {
            "mt": [gene.startswith("MT-") for gene in genes],
            "gene_ids": [f"ENSG-{gene}" for gene in genes],
            "n_cells_by_counts": np.diff(X.tocsc().indptr).astype(np.int64),
        },
        index=genes,
    )
    adata = ad.AnnData(X=X, obs=obs, var=var, uns={"sc_assets": {"layout": "csv"}})
    adata.layers["counts"] = X.copy()
    if panel is not None:
        adata.obsm["protein_expression"] = pd.DataFrame(
            rng.integers(0, 50, (n_cells, len(panel))).astype(np.float32),
            index=adata.obs_names,
            columns=panel,
        )
    return adata


def write(tmp_path: Path, label: str, adata: ad.AnnData) -> tuple[str, Path]:
    path = tmp_path / f"{label}.h5ad"
    adata.write_h5ad(path)
    return label, path


def recipe(sources: list[tuple[str, Path]]) -> ad.AnnData:
    """The in-memory definition of the merge."""
    adatas = [ad.read_h5ad(path) for _, path in sources]
    barcodes = [barcode for adata in adatas for barcode in adata.obs_names]
    merged = ad.concat(
        adatas,
        join="inner",
        merge="same",
        label="sample",
        keys=[label for label, _ in sources],
        index_unique=None,
    )
    merged.obs_names = [
        f"{label}-{bc}" for label, bc in zip(merged.obs["sample"], barcodes, strict=True)
    ]
    return merged


def assert_same_csr(got, want) -> None:
    assert type(got) is type(want) is sp.csr_matrix
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    got, want = got.copy(), want.copy()
    got.sort_indices()
    want.sort_indices()
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.data, want.data)


def assert_same_adata(got: ad.AnnData, want: ad.AnnData) -> None:
    pd.testing.assert_frame_equal(got.obs, want.obs, check_exact=True)
    pd.testing.assert_frame_equal(got.var, want.var, check_exact=True)
    assert_same_csr(got.X, want.X)
    assert sorted(got.layers) == sorted(want.layers)
    for key in want.layers:
        assert_same_csr(got.layers[key], want.layers[key])
    assert dict(got.uns) == dict(want.uns) == {}  # the sources' uns are dropped
    for attr in ("obsm", "varm", "obsp", "varp"):
        assert list(getattr(got, attr)) == list(getattr(want, attr))
    for key, frame in want.obsm.items():
        assert isinstance(frame, pd.DataFrame)
        # (anndata reads the columns of a frame without columns back as a RangeIndex)
        check_columns = len(frame.columns) > 0
        pd.testing.assert_frame_equal(
            got.obsm[key], frame, check_exact=True, check_column_type=check_columns
        )
    assert got.raw is None and want.raw is None


def assert_same_file(a: Path, b: Path) -> None:
    """Same matrices byte for byte (dtype included), same AnnData."""
    with h5py.File(a) as fa, h5py.File(b) as fb:
        for key in ("X", "layers/counts"):
            for name in ("indptr", "indices", "data"):
                da, db = fa[f"{key}/{name}"], fb[f"{key}/{name}"]
                assert da.dtype == db.dtype
                np.testing.assert_array_equal(da[()], db[()])
    assert_same_adata(ad.read_h5ad(a), ad.read_h5ad(b))


def checksum_of(path: Path, key: str) -> str:
    with h5py.File(path) as f:
        return "".join(
            f"{zlib.crc32(np.ascontiguousarray(f[f'{key}/{name}'][()])):08x}"
            for name in ("indptr", "indices", "data")
        )


@pytest.fixture
def same_genes(tmp_path: Path) -> list[tuple[str, Path]]:
    """Three samples with the same genes and antibody panel; the same barcodes recur."""
    samples = [("Ctrl1", 40, 1), ("Pre1", 25, 2), ("Post1", 33, 3)]
    sources = []
    for label, n_cells, seed in samples:
        adata = make_sample(label, n_cells=n_cells, seed=seed, panel=PANEL)
        # X is not the raw counts here, so a mix-up of X and the counts layer would show.
        adata.X = adata.X.multiply(0.5).tocsr()
        sources.append(write(tmp_path, label, adata))
    return sources


@pytest.fixture
def different_genes(tmp_path: Path) -> list[tuple[str, Path]]:
    """Gene sets differing in content and order; explicit zeros in two samples; antibody
    panels differing in order and content."""
    rng = np.random.default_rng(7)
    common = GENES[::2] + ["MT-ND1"]
    first = make_sample(
        "Ctrl1", common, n_cells=30, seed=1, panel=PANEL
    )  # exactly the common genes
    first.X.data[0] = first.layers["counts"].data[0] = 0  # kept: this source is not reindexed
    superset = list(rng.permutation(GENES + ["EXTRA1"]))  # shuffled: rows must be re-sorted
    second = make_sample("Pre1", superset, n_cells=20, seed=2, panel=PANEL[::-1])
    second.X.data[:3] = second.layers["counts"].data[:3] = 0  # dropped, as by reindexing
    third = make_sample("Post1", ["EXTRA2", *GENES], n_cells=25, seed=3, panel=[*PANEL, "CD56"])
    # Equal to the first source's on the common genes only: kept by merge="same".
    # (unique strings: write_h5ad would turn a column with repeats into a categorical)
    third.var["gene_ids"] = [f"ENSG-{g}" if g in common else f"x{g}" for g in third.var_names]
    return [
        write(tmp_path, label, adata)
        for label, adata in (("Ctrl1", first), ("Pre1", second), ("Post1", third))
    ]


def test_same_genes_equals_concat(tmp_path: Path, same_genes) -> None:
    out = tmp_path / "merged.h5ad"
    merge_h5ad(same_genes, out)

    got, want = ad.read_h5ad(out), recipe(same_genes)
    assert_same_adata(got, want)
    assert got.obs_names[0] == "Ctrl1-BC0000-1"
    assert got.obs_names[-1] == "Post1-BC0032-1"
    assert list(got.obs["sample"].cat.categories) == ["Ctrl1", "Pre1", "Post1"]
    assert got.obs["well"].dtype == object  # string column
    assert isinstance(got.obs["condition"].dtype, pd.CategoricalDtype)
    # merge="same": equal columns kept, the per-sample QC column dropped.
    assert list(got.var.columns) == ["mt", "gene_ids"]
    with h5py.File(out) as f:
        for key in ("X", "layers/counts"):
            assert f[f"{key}/data"].dtype == np.float32
            assert f[f"{key}/indices"].dtype == f[f"{key}/indptr"].dtype == np.int32


def test_different_genes_inner_join(tmp_path: Path, different_genes) -> None:
    out = tmp_path / "merged.h5ad"
    merge_h5ad(different_genes, out)

    got, want = ad.read_h5ad(out), recipe(different_genes)
    assert_same_adata(got, want)
    assert list(got.var_names) == GENES[::2] + ["MT-ND1"]  # the first source's order
    assert list(got.var.columns) == ["mt", "gene_ids"]
    with h5py.File(out) as f:
        indptr, indices = f["X/indptr"][()], f["X/indices"][()]
    assert all(
        np.all(np.diff(indices[a:b]) > 0) for a, b in zip(indptr[:-1], indptr[1:], strict=True)
    )


def test_columns_follow_concat(tmp_path: Path) -> None:
    """obs: inner join of the columns, unified categoricals, promoted dtypes, the label column;
    var: merge="same" keeps the last source's column order."""
    a = make_sample("Pre1", seed=1)
    a.obs["batch"] = pd.Categorical(["b10"] * 20 + ["b2"] * 20)
    a.obs["only_here"] = 1.0
    a.obs["score"] = np.arange(40, dtype=np.int64)
    b = make_sample("Ctrl1", seed=2)
    b.obs["batch"] = pd.Categorical(["b1"] * 40)
    b.obs["score"] = np.linspace(0, 1, 40)
    b.obs = b.obs[list(reversed(b.obs.columns))]  # obs: column order of the first source wins
    b.var = b.var[list(reversed(b.var.columns))]  # var: column order of the last source wins
    sources = [write(tmp_path, "Pre1", a), write(tmp_path, "Ctrl1", b)]
    out = tmp_path / "merged.h5ad"
    merge_h5ad(sources, out)

    got = ad.read_h5ad(out)
    assert_same_adata(got, recipe(sources))
    assert "only_here" not in got.obs
    assert list(got.obs["batch"].cat.categories) == ["b1", "b2", "b10"]  # natural sort
    assert got.obs["score"].dtype == np.float64
    assert list(got.obs["sample"].cat.categories) == ["Pre1", "Ctrl1"]  # source order
    assert list(got.var.columns) == ["gene_ids", "mt"]


@pytest.mark.parametrize(
    ("panels", "merged_panel"),
    [
        pytest.param([PANEL, PANEL[::-1], PANEL], PANEL, id="order-differs"),
        pytest.param(
            [PANEL, [*PANEL[1:], "CD56"], ["CD56", *PANEL[:4]]], PANEL[1:4], id="some-differ"
        ),
        pytest.param([PANEL[:2], PANEL[2:], PANEL], [], id="none-in-common"),
        pytest.param([PANEL, None, PANEL], None, id="a-sample-without"),
        pytest.param([None, None, None], None, id="no-panels"),
    ],
)
def test_protein_panels_follow_concat(tmp_path: Path, monkeypatch, panels, merged_panel) -> None:
    """obsm["protein_expression"] as ad.concat's inner join: common antibodies in the first
    sample's order (even none), or no key when a sample has no panel."""
    monkeypatch.setattr(merge, "OBS_BATCH_ROWS", 8)  # several batches per sample and across
    sources = [
        write(tmp_path, label, make_sample(label, n_cells=n_cells, seed=seed, panel=panel))
        for label, n_cells, seed, panel in zip(
            ("Ctrl1", "Pre1", "Post1"), (20, 7, 13), (1, 2, 3), panels, strict=True
        )
    ]
    out = tmp_path / "merged.h5ad"
    merge_h5ad(sources, out)

    got = ad.read_h5ad(out)
    assert_same_adata(got, recipe(sources))
    if merged_panel is None:
        assert "protein_expression" not in got.obsm
    else:
        protein = got.obsm["protein_expression"]
        assert list(protein.columns) == merged_panel
        assert protein.shape == (40, len(merged_panel))
        assert list(protein.index) == list(got.obs_names)


def test_protein_dtypes_are_promoted_as_by_concat(tmp_path: Path) -> None:
    first = make_sample("Ctrl1", seed=1, panel=PANEL)
    second = make_sample("Pre1", seed=2, panel=PANEL)
    second.obsm["protein_expression"] = second.obsm["protein_expression"].astype(np.int64)
    sources = [write(tmp_path, "Ctrl1", first), write(tmp_path, "Pre1", second)]
    out = tmp_path / "merged.h5ad"
    merge_h5ad(sources, out)
    got = ad.read_h5ad(out)
    assert_same_adata(got, recipe(sources))
    assert set(got.obsm["protein_expression"].dtypes) == {np.dtype(np.float64)}


def test_samplesheet_metadata_merges_as_concat(tmp_path: Path) -> None:
    """obs columns from samplesheets: one category per sample, missing values, strings."""
    from sc_assets.core.samples import SampleSpec

    rows = {
        "Ctrl1": {"condition": "control", "donor": "D1", "tissue": None, "batch": None},
        "Pre1": {"condition": "treated", "donor": None, "tissue": None, "batch": "b10"},
        "Post1": {"condition": "treated", "donor": "D10", "tissue": None, "batch": "b2"},
    }
    sources = []
    for seed, (label, metadata) in enumerate(rows.items()):
        adata = make_sample(label, n_cells=10 + seed, seed=seed)
        spec = SampleSpec(
            label, tmp_path, metadata=tuple(metadata.items()), categorical=frozenset(metadata)
        )
        for column, values in spec.obs_columns(adata.n_obs).items():
            adata.obs[column] = values
        # A string column: written as a categorical where its values repeat, else as strings.
        adata.obs["note"] = [f"{label}-{i}" if seed else "same" for i in range(adata.n_obs)]
        sources.append(write(tmp_path, label, adata))
    out = tmp_path / "merged.h5ad"
    merge_h5ad(sources, out)

    got = ad.read_h5ad(out)
    assert_same_adata(got, recipe(sources))
    obs = got.obs
    assert list(obs["condition"].cat.categories) == ["control", "treated"]
    assert list(obs["donor"].cat.categories) == ["D1", "D10"]
    assert obs["donor"].isna().sum() == 11  # Pre1's cells
    assert len(obs["tissue"].cat.categories) == 0 and obs["tissue"].isna().all()
    assert list(obs["batch"].cat.categories) == ["b2", "b10"]  # natural sort
    assert obs["note"].dtype == object
    assert list(obs["sample"].cat.categories) == ["Ctrl1", "Pre1", "Post1"]


def test_summary_numbers(tmp_path: Path, different_genes) -> None:
    out = tmp_path / "merged.h5ad"
    summary = merge_h5ad(different_genes, out)
    want = recipe(different_genes)

    assert isinstance(summary, MergeSummary)
    assert (summary.n_obs, summary.n_vars) == want.shape
    assert summary.nnz == want.X.nnz
    assert summary.counts_nnz == want.layers["counts"].nnz
    assert summary.x_sum == float(want.X.data.astype(np.float64).sum())
    assert summary.counts_sum == float(want.layers["counts"].data.astype(np.float64).sum())
    assert summary.x_checksum == checksum_of(out, "X")
    assert summary.counts_checksum == checksum_of(out, "layers/counts")
    assert summary.x_checksum == summary.counts_checksum  # identical matrices here
    totals = np.asarray(want.X.sum(axis=1)).ravel()
    assert summary.median_total_counts == float(np.median(totals))
    assert summary.obs_names_unique and summary.n_duplicate_obs_names == 0
    rows = np.cumsum(
        [0] + [int((want.obs["sample"] == label).sum()) for label, _ in different_genes]
    )
    for sample, (label, path), start, stop in zip(
        summary.samples, different_genes, rows[:-1], rows[1:], strict=True
    ):
        part = want.X[start:stop]
        assert (sample.label, sample.path, sample.n_obs) == (label, str(path), stop - start)
        assert sample.nnz == part.nnz
        assert sample.x_sum == float(part.data.astype(np.float64).sum())
    assert summary.n_obs == sum(sample.n_obs for sample in summary.samples)


def test_layers_are_checked_separately(tmp_path: Path, same_genes) -> None:
    summary = merge_h5ad(same_genes, tmp_path / "merged.h5ad")
    assert summary.nnz == summary.counts_nnz
    assert summary.x_sum * 2 == summary.counts_sum  # X is half the counts in this fixture
    assert summary.x_checksum != summary.counts_checksum


@pytest.mark.parametrize("dtypes", [(np.int32, np.int32), (np.float32, np.float64)])
def test_matrix_dtypes_follow_concat(tmp_path: Path, dtypes) -> None:
    """Integer data as wide as the indices; mixed dtypes promoted as by vstack."""
    sources = []
    for i, dtype in enumerate(dtypes):
        adata = make_sample(f"S{i}", seed=i)
        adata.X = adata.X.astype(dtype)
        adata.layers["counts"] = adata.layers["counts"].astype(dtype)
        sources.append(write(tmp_path, f"S{i}", adata))
    out = tmp_path / "merged.h5ad"
    merge_h5ad(sources, out, block_nnz=7)
    got = ad.read_h5ad(out)
    assert_same_adata(got, recipe(sources))
    assert got.X.dtype == np.result_type(*dtypes)


@pytest.mark.parametrize("sources_fixture", ["same_genes", "different_genes"])
def test_small_blocks_give_identical_output(tmp_path: Path, request, sources_fixture) -> None:
    sources = request.getfixturevalue(sources_fixture)
    whole, blocks = tmp_path / "whole.h5ad", tmp_path / "blocks.h5ad"
    summary_whole = merge_h5ad(sources, whole)
    summary_blocks = merge_h5ad(sources, blocks, block_nnz=7)  # rows are longer than a block
    assert summary_blocks == summary_whole
    assert_same_file(blocks, whole)


@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_compression_reads_back_equal(tmp_path: Path, same_genes, compression) -> None:
    plain, packed = tmp_path / "plain.h5ad", tmp_path / f"{compression}.h5ad"
    summary_plain = merge_h5ad(same_genes, plain)
    summary_packed = merge_h5ad(same_genes, packed, compression=compression)
    assert summary_packed == summary_plain
    assert_same_file(packed, plain)
    with h5py.File(packed) as f:
        assert f["X/data"].compression == compression and f["X/data"].shuffle
        assert f["obs/well"].compression == compression
        assert f["obsm/protein_expression/CD3"].compression == compression


def test_readable_in_backed_mode(tmp_path: Path, different_genes) -> None:
    out = tmp_path / "merged.h5ad"
    merge_h5ad(different_genes, out)
    want = recipe(different_genes)
    backed = ad.read_h5ad(out, backed="r")
    try:
        assert backed.shape == want.shape
        pd.testing.assert_frame_equal(backed.obs, want.obs)
        pd.testing.assert_frame_equal(
            backed.obsm["protein_expression"], want.obsm["protein_expression"]
        )
        assert_same_csr(sp.csr_matrix(backed.X[10:50]), want.X[10:50])
    finally:
        backed.file.close()


def test_index_dtype_widens_when_needed(tmp_path: Path, same_genes, monkeypatch) -> None:
    monkeypatch.setattr(merge, "_INT32_MAX", 100)  # as if nnz were beyond int32
    out = tmp_path / "merged.h5ad"
    merge_h5ad(same_genes, out)
    with h5py.File(out) as f:
        assert f["X/indices"].dtype == f["X/indptr"].dtype == np.int64
    assert_same_adata(ad.read_h5ad(out), recipe(same_genes))


def test_duplicate_obs_names_are_reported(tmp_path: Path) -> None:
    # "A" + "B-1" and "A-B" + "1" both give "A-B-1"; a repeated barcode within a sample too.
    sources = [
        write(tmp_path, "A", make_sample("A", n_cells=3, barcodes=["B-1", "C-1", "D-1"])),
        write(tmp_path, "A-B", make_sample("AB", n_cells=3, barcodes=["1", "X-1", "X-1"])),
    ]
    summary = merge_h5ad(sources, tmp_path / "merged.h5ad")
    assert not summary.obs_names_unique
    assert summary.n_duplicate_obs_names == 2
    assert summary.duplicate_obs_names == ("A-B-1", "A-B-X-1")


def test_empty_sample(tmp_path: Path, same_genes) -> None:
    empty = make_sample("Empty", n_cells=0, panel=PANEL)
    sources = [same_genes[0], write(tmp_path, "Empty", empty)]
    out = tmp_path / "merged.h5ad"
    summary = merge_h5ad(sources, out, block_nnz=7)
    assert_same_adata(ad.read_h5ad(out), recipe(sources))
    assert summary.samples[1].n_obs == summary.samples[1].nnz == 0


def test_duplicate_labels_raise(tmp_path: Path, same_genes) -> None:
    out = tmp_path / "merged.h5ad"
    with pytest.raises(ValueError, match="duplicate source label 'Ctrl1'"):
        merge_h5ad([same_genes[0], ("Ctrl1", same_genes[1][1])], out)
    assert not out.exists()


def test_missing_file_raises(tmp_path: Path, same_genes) -> None:
    missing = tmp_path / "Nope.h5ad"
    out = tmp_path / "merged.h5ad"
    with pytest.raises(FileNotFoundError, match="Nope.h5ad"):
        merge_h5ad([same_genes[0], ("Nope", missing)], out)
    assert not out.exists()


def test_source_without_counts_layer_raises(tmp_path: Path, same_genes) -> None:
    adata = make_sample("Pre2")
    del adata.layers["counts"]
    label, path = write(tmp_path, "Pre2", adata)
    with pytest.raises(ValueError, match=r"Pre2\.h5ad: has no layers\['counts'\]"):
        merge_h5ad([same_genes[0], (label, path)], tmp_path / "merged.h5ad")


@pytest.mark.parametrize(
    ("matrix", "message"),
    [(sp.csc_matrix, "X is CSC, not CSR"), (lambda X: X.toarray(), "X is array, not a CSR")],
)
def test_non_csr_matrix_raises(tmp_path: Path, same_genes, matrix, message) -> None:
    adata = make_sample("Pre2")
    adata.X = matrix(adata.X)
    label, path = write(tmp_path, "Pre2", adata)
    with pytest.raises(ValueError, match=rf"Pre2\.h5ad: {message}"):
        merge_h5ad([same_genes[0], (label, path)], tmp_path / "merged.h5ad")


def test_elements_it_would_drop_raise(tmp_path: Path) -> None:
    sources = []
    for label in ("Ctrl1", "Pre1"):
        adata = make_sample(label)
        adata.obsm["X_pca"] = np.zeros((adata.n_obs, 2))
        sources.append(write(tmp_path, label, adata))
    with pytest.raises(ValueError, match=r"obsm \['X_pca'\]"):
        merge_h5ad(sources, tmp_path / "merged.h5ad")


def test_an_obsm_key_that_is_not_a_frame_everywhere_raises(tmp_path: Path) -> None:
    sources = [write(tmp_path, "Ctrl1", make_sample("Ctrl1", panel=PANEL))]
    adata = make_sample("Pre1")
    adata.obsm["protein_expression"] = np.zeros((adata.n_obs, len(PANEL)))
    sources.append(write(tmp_path, "Pre1", adata))
    with pytest.raises(ValueError, match=r"obsm \['protein_expression'\]"):
        merge_h5ad(sources, tmp_path / "merged.h5ad")


def test_output_removed_on_error(tmp_path: Path, same_genes, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(merge, "_duplicate_names", fail)
    out = tmp_path / "merged.h5ad"
    with pytest.raises(RuntimeError, match="disk full"):
        merge_h5ad(same_genes, out)
    assert not out.exists()


def test_refuses_to_overwrite_a_source(same_genes) -> None:
    with pytest.raises(ValueError, match="is the source 'Pre1'"):
        merge_h5ad(same_genes, same_genes[1][1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"compression": "zstd"}, "compression must be"), ({"block_nnz": 0}, "block_nnz must be")],
)
def test_invalid_arguments_raise(tmp_path: Path, same_genes, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        merge_h5ad(same_genes, tmp_path / "merged.h5ad", **kwargs)


def test_no_sources_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no sources"):
        merge_h5ad([], tmp_path / "merged.h5ad")


def test_sources_whose_counts_are_x_give_a_merge_whose_counts_are_x(tmp_path: Path) -> None:
    """Files written by the platform store layers["counts"] as a link to X: so does the merge."""
    from sc_assets.core.h5ad import write_h5ad

    sources = []
    for label, n_cells, seed in [("Ctrl1", 40, 1), ("Pre1", 25, 2), ("Post1", 33, 3)]:
        path = tmp_path / f"{label}.h5ad"
        assert write_h5ad(make_sample(label, n_cells=n_cells, seed=seed), path) == ["counts"]
        sources.append((label, path))
    out = tmp_path / "merged.h5ad"
    summary = merge_h5ad(sources, out)
    with h5py.File(out) as f:
        assert f["layers/counts"] == f["X"]
    assert_same_adata(ad.read_h5ad(out), recipe(sources))
    assert summary.counts_checksum == summary.x_checksum == checksum_of(out, "layers/counts")
    assert summary.counts_nnz == summary.nnz and summary.counts_sum == summary.x_sum

    # One source with a separate copy (equal values): the merge writes both matrices.
    label, path = sources[1]
    ad.read_h5ad(path).write_h5ad(path)
    merge_h5ad(sources, out)
    with h5py.File(out) as f:
        assert f["layers/counts"] != f["X"]
    assert_same_adata(ad.read_h5ad(out), recipe(sources))
