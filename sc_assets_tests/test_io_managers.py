import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from dagster import (
    AssetIn,
    DagsterInstance,
    StaticPartitionsDefinition,
    asset,
    materialize,
)
from upath import UPath

from sc_assets.io_managers import (
    LOAD_AS_PATH,
    DeferredH5ad,
    GeneListIOManagerFactory,
    H5adIOManager,
    H5adIOManagerFactory,
)

PARTS = StaticPartitionsDefinition(["GSM1_Ctrl1", "GSM2_Ctrl2"])


def small_adata(seed: int) -> ad.AnnData:
    X = sp.random(5, 4, density=0.5, format="csr", dtype=np.float32, random_state=seed)
    return ad.AnnData(X=X, layers={"counts": X.copy()})


@asset(partitions_def=PARTS, io_manager_key="h5ad_io_manager")
def per_sample(context) -> ad.AnnData:
    return small_adata(seed=len(context.partition_key) + int(context.partition_key[3]))


@asset(ins={"per_sample": AssetIn(metadata={LOAD_AS_PATH: True})}, io_manager_key="h5ad_io_manager")
def streamed(per_sample: dict) -> DeferredH5ad:
    def write(path, compression):
        parts = [ad.read_h5ad(p.path) for _, p in sorted(per_sample.items())]
        ad.concat(parts).write_h5ad(path, compression=compression)
        return {"n": len(parts)}

    return DeferredH5ad(write=write, describe=lambda result: {"n_parts": result["n"]})


@asset(io_manager_key="gene_list_io_manager")
def genes() -> list[str]:
    return ["TBCE", "TBCE-1", "MT-CO1"]


def resources(base: str) -> dict:
    return {
        "h5ad_io_manager": H5adIOManagerFactory(base_dir=base, compression="lzf"),
        "gene_list_io_manager": GeneListIOManagerFactory(base_dir=base),
    }


def test_round_trip_layout_and_metadata(tmp_path):
    with DagsterInstance.ephemeral() as instance:
        for key in PARTS.get_partition_keys():
            result = materialize(
                [per_sample],
                partition_key=key,
                resources=resources(str(tmp_path)),
                instance=instance,
            )
            meta = result.asset_materializations_for_node("per_sample")[0].metadata
            path = tmp_path / "per_sample" / f"{key}.h5ad"
            assert meta["path"].value == str(path)
            assert meta["bytes"].value == path.stat().st_size
        result = materialize(
            [per_sample, streamed, genes],
            selection=[streamed, genes],
            resources=resources(str(tmp_path)),
            instance=instance,
        )
    merged = ad.read_h5ad(tmp_path / "streamed.h5ad")
    assert merged.n_obs == 10
    assert result.asset_materializations_for_node("streamed")[0].metadata["n_parts"].value == 2
    assert (tmp_path / "genes.txt").read_text() == "TBCE\nTBCE-1\nMT-CO1\n"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    with DagsterInstance.ephemeral() as instance:
        materialize(
            [per_sample],
            partition_key="GSM1_Ctrl1",
            resources=resources(str(tmp_path)),
            instance=instance,
        )
        path = tmp_path / "per_sample" / "GSM1_Ctrl1.h5ad"
        before = path.read_bytes()

        def broken_write(self, filename, **kwargs):
            with open(filename, "wb") as f:
                f.write(b"half an h5ad")
            raise OSError("disk full")

        monkeypatch.setattr(ad.AnnData, "write_h5ad", broken_write)
        result = materialize(
            [per_sample],
            partition_key="GSM1_Ctrl1",
            resources=resources(str(tmp_path)),
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["GSM1_Ctrl1.h5ad"]


def test_object_store_roots_work_through_universal_pathlib():
    base = "memory://sc-assets-test"
    with DagsterInstance.ephemeral() as instance:
        materialize(
            [per_sample], partition_key="GSM2_Ctrl2", resources=resources(base), instance=instance
        )
    path = UPath(base) / "per_sample" / "GSM2_Ctrl2.h5ad"
    with path.open("rb") as f:
        assert ad.read_h5ad(f).n_obs == 5


@pytest.mark.parametrize("key", ["../../etc/passwd", "/etc/passwd", "a/../../b", ".."])
def test_partition_paths_stay_inside_the_root(tmp_path, key):
    manager = H5adIOManager(UPath(tmp_path))
    path = manager.make_safe_partition_path(UPath(tmp_path) / "sample_adata", key)
    resolved = UPath(path).resolve()
    assert str(resolved).startswith(str((tmp_path / "sample_adata").resolve()) + "/")
