"""write_h5ad stores a counts layer equal to X once (a hard link), and anndata reads both."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from sc_assets.core.h5ad import matrices_equal, read_h5ad_layout, write_h5ad


def counts_adata() -> ad.AnnData:
    X = sp.random(30, 12, density=0.3, format="csr", dtype=np.float32, rng=1)
    X.data = np.ceil(X.data * 10)
    adata = ad.AnnData(X=X)
    adata.layers["counts"] = X.copy()
    adata.layers["normalized"] = X.multiply(0.5).tocsr()
    return adata


def test_a_layer_equal_to_x_is_stored_once(tmp_path: Path) -> None:
    adata = counts_adata()
    path = tmp_path / "a.h5ad"
    assert write_h5ad(adata, path) == ["counts"]
    with h5py.File(path) as f:
        assert f["layers/counts"] == f["X"]  # the same HDF5 object
        assert f["layers/normalized"] != f["X"]
    # the caller's object is as it was
    assert list(adata.layers) == ["counts", "normalized"]
    back = ad.read_h5ad(path)
    for name in ("counts", "normalized"):
        assert matrices_equal(back.layers[name], adata.layers[name])
    assert matrices_equal(back.X, adata.X)
    # two independent matrices in memory
    assert not np.shares_memory(back.X.data, back.layers["counts"].data)
    # about half the size of anndata's own file, which stores the layer again
    adata.write_h5ad(tmp_path / "plain.h5ad")
    del adata.layers["normalized"]
    write_h5ad(adata, tmp_path / "linked.h5ad")
    plain = (tmp_path / "plain.h5ad").stat().st_size
    assert (tmp_path / "linked.h5ad").stat().st_size < 0.8 * plain


def test_a_layer_that_differs_is_written_as_a_copy(tmp_path: Path) -> None:
    adata = counts_adata()
    adata.layers["counts"].data[0] += 1
    path = tmp_path / "b.h5ad"
    assert write_h5ad(adata, path, compression="lzf") == []
    with h5py.File(path) as f:
        assert f["layers/counts"] != f["X"]
        assert f["X/data"].compression == "lzf"
    assert matrices_equal(ad.read_h5ad(path).layers["counts"], adata.layers["counts"])


def test_matrices_equal_across_formats_and_nan() -> None:
    X = sp.csr_matrix(np.array([[0, 1.0], [np.nan, 2.0]], dtype=np.float32))
    assert matrices_equal(X, X.copy())  # CSR: NaN equals NaN (the same stored values)
    Y = sp.csc_matrix(np.array([[0, 1.0], [3.0, 2.0]], dtype=np.float32))
    assert matrices_equal(Y, Y.copy()) and not matrices_equal(Y, Y * 2)
    assert not matrices_equal(X, X[:, :1])
    assert matrices_equal(np.eye(2), sp.csr_matrix(np.eye(2)))


def test_layout_has_the_protein_panel_read_from_the_column_order(tmp_path: Path) -> None:
    adata = counts_adata()
    panel = ["CD3", "CD8a", "HLA-DR", "CD4"]
    adata.obsm["protein_expression"] = pd.DataFrame(
        np.ones((adata.n_obs, len(panel)), dtype=np.float32), index=adata.obs_names, columns=panel
    )
    path = tmp_path / "cite.h5ad"
    write_h5ad(adata, path)
    with h5py.File(path, "r+") as f:  # no values are read: the columns' data can go
        for name in panel:
            del f[f"obsm/protein_expression/{name}"]
    layout = read_h5ad_layout(path)
    assert layout.protein_panel == panel
    assert layout.var_names == list(adata.var_names)
    assert layout.x_encoding == "csr_matrix"


def test_layout_without_a_protein_frame_has_no_panel(tmp_path: Path) -> None:
    adata = counts_adata()
    write_h5ad(adata, tmp_path / "plain.h5ad")
    assert read_h5ad_layout(tmp_path / "plain.h5ad").protein_panel is None
    adata.obsm["protein_expression"] = np.ones((adata.n_obs, 3))  # no antibody names
    write_h5ad(adata, tmp_path / "array.h5ad")
    assert read_h5ad_layout(tmp_path / "array.h5ad").protein_panel is None
    adata.obsm["protein_expression"] = pd.DataFrame(index=adata.obs_names)  # no antibodies
    write_h5ad(adata, tmp_path / "empty.h5ad")
    assert read_h5ad_layout(tmp_path / "empty.h5ad").protein_panel == []
