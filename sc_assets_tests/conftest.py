"""Fixtures shared by the Dagster-level tests: settings, definitions, an instance, sample files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from dagster import DagsterInstance

from sc_assets.core.count_matrix_writer import write_count_matrix
from sc_assets.dagster_home import ensure_dagster_home
from sc_assets.settings import Settings

TEST_GENES = [f"GENE{i}" for i in range(400)] + ["TBCE", "TBCE", "MT-CO1", "MT-ND1", "MT-CYB"]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings (and environment) pointing at fresh data, storage and Dagster home folders."""
    env = {
        "SC_ASSETS_DATA_DIR": str(tmp_path / "data"),
        "SC_ASSETS_STORAGE_DIR": str(tmp_path / "storage"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "data").mkdir()
    ensure_dagster_home(tmp_path / "dagster_home")
    return Settings.from_env()


@pytest.fixture
def defs(settings: Settings):
    from sc_assets.definitions import build_definitions

    return build_definitions(settings)


@pytest.fixture
def instance(settings: Settings):
    """A persistent SQLite instance in the test's DAGSTER_HOME (as the CLI and UI use)."""
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        yield instance


def random_counts(n_cells: int, n_genes: int, *, seed: int, density: float = 0.05) -> sp.csr_matrix:
    """Sparse integer counts 1..20 at the given density, no empty cell."""
    rng = np.random.default_rng(seed)
    X = sp.random(
        n_cells,
        n_genes,
        density=density,
        format="lil",
        random_state=rng,
        data_rvs=lambda k: rng.integers(1, 20, k),
    )
    X[:, 0] = 1
    return sp.csr_matrix(X, dtype=np.float32)


def write_sample(
    data_dir: Path,
    key: str,
    n_cells: int = 150,
    *,
    seed: int = 0,
    genes: list[str] = TEST_GENES,
    counts: sp.spmatrix | np.ndarray | None = None,
) -> Path:
    """Write ``<key>_count_matrix.csv.gz`` with random (or the given) counts."""
    if counts is None:
        counts = random_counts(n_cells, len(genes), seed=seed)
    barcodes = [
        f"{''.join('ACGT'[(i >> (2 * b)) & 3] for b in range(16))}-1"
        for i in range(counts.shape[0])
    ]
    return write_count_matrix(data_dir / f"{key}_count_matrix.csv.gz", counts, genes, barcodes)


def _barcode(i: int) -> str:
    """The i-th 10x-like barcode: 16 bases and ``-1``."""
    return "".join("ACGT"[(i >> (2 * b)) & 3] for b in range(16)) + "-1"


DEMO_SCALE = 0.015  # 125 to 141 cells per sample: above the 100-cell minimum, fast to ingest


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Five small demo samples (33,538 genes each), written once per test session."""
    from sc_assets.core.demo import write_demo_series

    folder = tmp_path_factory.mktemp("demo")
    paths = write_demo_series(folder, scale=DEMO_SCALE, samples=5, seed=0, workers=1)
    return {path.name.removesuffix("_count_matrix.csv.gz"): path for path in paths}


def copy_samples(demo_files: dict[str, Path], data_dir: Path, keys: list[str] | None = None):
    """Copy demo samples (all, or ``keys``) into the data folder; returns their keys."""
    keys = list(demo_files) if keys is None else keys
    for key in keys:
        shutil.copy(demo_files[key], data_dir / demo_files[key].name)
    return keys


def pandas_reference(path: Path) -> tuple[sp.csr_matrix, list[str], list[str]]:
    """The tutorial's recipe: cells x genes CSR, barcodes, gene symbols."""
    df = pd.read_csv(path, index_col=0)
    return sp.csr_matrix(df.T.values), [str(c) for c in df.columns], [str(g) for g in df.index]
