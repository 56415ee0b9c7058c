"""Fixtures shared by the Dagster-level tests: settings, definitions, an instance, sample files."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from dagster import DagsterInstance, Definitions

from sc_assets.core.count_matrix_writer import write_count_matrix
from sc_assets.dagster_home import ensure_dagster_home
from sc_assets.settings import Settings

TEST_GENES = [f"GENE{i}" for i in range(400)] + ["TBCE", "TBCE", "MT-CO1", "MT-ND1", "MT-CYB"]


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """``sc-assets ARGS`` started as a user in the project folder ``cwd`` runs it: none of
    the test environment's ``SC_ASSETS_*`` settings, its own Dagster home there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SC_ASSETS_")}
    return subprocess.Popen(
        [sys.executable, "-m", "sc_assets.cli", *args],
        cwd=cwd,
        env={**env, "DAGSTER_HOME": str(cwd / ".dagster_home")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """:func:`start_cli`, waited for (killed after ``timeout`` seconds)."""
    process = start_cli(*args, cwd=cwd)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@dataclass
class Platform:
    """Everything a Dagster-level test works on: settings, definitions, a SQLite instance."""

    settings: Settings
    defs: Definitions
    instance: DagsterInstance


@contextlib.contextmanager
def platform_in(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """Point the environment at fresh data, storage and Dagster home folders under ``folder``."""
    from sc_assets.definitions import build_definitions

    monkeypatch.setenv("SC_ASSETS_DATA_DIR", str(folder / "data"))
    monkeypatch.setenv("SC_ASSETS_STORAGE_DIR", str(folder / "storage"))
    monkeypatch.setenv("DAGSTER_HOME", str(folder / "dagster_home"))
    (folder / "data").mkdir()
    ensure_dagster_home(folder / "dagster_home")
    settings = Settings.from_env()
    # A persistent SQLite instance in DAGSTER_HOME, as the CLI and the UI use.
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        yield Platform(settings, build_definitions(settings), instance)


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    with platform_in(tmp_path, monkeypatch) as p:
        yield p


@pytest.fixture(scope="module")
def module_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One platform shared by the tests of a module (for read-only tests of one ingest)."""
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        platform_in(tmp_path_factory.mktemp("platform"), monkeypatch) as p,
    ):
        yield p


@pytest.fixture
def settings(platform: Platform) -> Settings:
    return platform.settings


@pytest.fixture
def defs(platform: Platform) -> Definitions:
    return platform.defs


@pytest.fixture
def instance(platform: Platform) -> DagsterInstance:
    return platform.instance


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


def run(p: Platform, job: str, partition_key: str | None = None):
    """Execute one job of the code location in process, recorded on the test's instance."""
    return p.defs.resolve_job_def(job).execute_in_process(
        instance=p.instance, partition_key=partition_key, raise_on_error=False
    )


def ingest(p: Platform, keys: list[str]):
    """What ``sc-assets ingest`` does, in process: register, pin genes, samples, merge."""
    p.instance.add_dynamic_partitions("samples", keys)
    assert run(p, "pin_reference_genes").success
    samples = {key: run(p, "ingest_sample", key) for key in keys}
    return samples, run(p, "merge_samples")


@dataclass
class Bucket:
    """A bucket of the test session's S3 API server, and the URL of a prefix in it."""

    name: str
    endpoint: str

    def url(self, prefix: str) -> str:
        return f"s3://{self.name}/{prefix}"

    @property
    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(
            endpoint_url=self.endpoint, key="test", secret="test", skip_instance_cache=True
        )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API (moto's server) on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A fresh bucket, and this process's (and its children's) ``AWS_*`` pointed at it: the
    standard variables, as a user sets them."""
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"lab-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return Bucket(name, s3_endpoint)
