"""sc-assets on several machines, simulated on this one: ``make cluster-demo`` and
``test_distributed.py``.

What runs, and where:

- on this machine, at 127.0.0.1: PostgreSQL (a fresh database: the Dagster instance and the
  Celery result backend), RabbitMQ (a fresh virtual host: the broker), moto's S3 API server
  (a bucket: the inbox, the storage, the compute logs) and ``dagster dev`` (webserver, daemon,
  code server) with ``deploy/dagster.yaml`` as its instance, unchanged;
- two simulated hosts (:mod:`sc_assets.simulated_hosts`: own network, own hostname, nothing
  writable but their own tmpfs), each running ``deploy/worker.sh`` (a dagster-celery worker
  serving the ``dagster`` and ``merge`` queues) with ``deploy/dagster.yaml`` copied onto it,
  reaching the services only at the bridge's address.

The samples are uploaded into the bucket's inbox; the daemon's sensor registers them and
launches their runs through the ``MonitoredCeleryRunLauncher``; workers execute them, reading
from and writing to the bucket; the automation sensor then launches the merge, which a worker
runs too. Nothing passes through a shared folder: the hosts cannot write anywhere the others
(or this machine) read.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sc_assets.simulated_hosts import Host, SimulatedHosts
from sc_assets_tests.integration.cluster import (
    BIN,
    POSTGRES_PORT,
    RABBITMQ_PORT,
    S3Server,
    moto_s3,
    postgres_database,
    postgres_url,
    relay_services,
    wait_for,
)
from sc_assets_tests.integration.conftest import (
    PROJECT,
    DagsterDev,
    free_port,
    start_dev,
    stop_dagster_dev,
)

DEPLOY = PROJECT / "deploy"
BUCKET = "sc-assets"
#: The deployment's queues: every worker here serves both (a real deployment may give
#: ``merge`` to a big-disk host only).
QUEUES = "dagster,merge"
WORKER_HOME = "/tmp/dagster_home"


@dataclass
class Cluster:
    """The running services, hosts and workers; :func:`cluster` starts and stops them."""

    workdir: Path
    database: str
    vhost: str
    s3: S3Server
    hosts: SimulatedHosts
    dev: DagsterDev | None = None
    postgres_port: int = POSTGRES_PORT
    rabbitmq_port: int = RABBITMQ_PORT
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def env(self, address: str = "127.0.0.1") -> dict[str, str]:
        """What every sc-assets process needs (deploy/README.md), with the services at
        ``address``: 127.0.0.1 on this machine, the bridge's on a simulated host."""
        url = postgres_url(self.database, address, self.postgres_port)
        broker = f"pyamqp://guest@{address}:{self.rabbitmq_port}/{self.vhost}"
        return {
            **self.s3.env(address),
            "DAGSTER_POSTGRES_URL": url,
            "DAGSTER_CELERY_BROKER_URL": broker,
            "DAGSTER_CELERY_BACKEND_URL": f"db+{url}",
            "DAGSTER_COMPUTE_LOG_BUCKET": BUCKET,
            "DAGSTER_COMPUTE_LOG_PREFIX": "compute-logs",
            "SC_ASSETS_DATA_DIR": f"s3://{BUCKET}/inbox",
            "SC_ASSETS_STORAGE_DIR": f"s3://{BUCKET}/storage",
            "SC_ASSETS_SENSOR_INTERVAL": "2",
        }

    @property
    def home(self) -> Path:
        return self.workdir / "dagster_home"

    def start_worker(self, host: Host) -> subprocess.Popen:
        """``deploy/worker.sh`` on ``host``, one run at a time; returns once it consumes."""
        host.put(f"{WORKER_HOME}/dagster.yaml", (DEPLOY / "dagster.yaml").read_text())
        log = self.workdir / f"worker-{host.name}.log"
        env = {
            **self.env(self.hosts.bridge_ip),
            "DAGSTER_HOME": WORKER_HOME,
            "DAGSTER_CELERY_QUEUES": QUEUES,
            "DAGSTER_CELERY_CONCURRENCY": "1",
            "SC_ASSETS_VENV": str(BIN.parent),
        }
        with log.open("ab") as console:
            worker = host.popen(
                ["bash", str(DEPLOY / "worker.sh")], env=env, stdout=console, stderr=console
            )
        wait_for(lambda: b" ready." in log.read_bytes(), worker, 120, f"worker on {host.name}")
        self.workers[host.name] = worker
        return worker

    def upload(self, files: list[Path]) -> None:
        """Drop sample files into the bucket's inbox, as a lab's upload does."""
        client = self.s3.client()
        for path in files:
            client.upload_file(str(path), BUCKET, f"inbox/{path.name}")

    def host_named(self, worker: str) -> Host:
        """The host of a Celery worker named ``celery@<host>``."""
        name = worker.rpartition("@")[2]
        return next(host for host in self.hosts.hosts if host.name == name)


@contextlib.contextmanager
def cluster(
    workdir: Path,
    *,
    hosts: int = 2,
    postgres_port: int = POSTGRES_PORT,
    rabbitmq_port: int = RABBITMQ_PORT,
) -> Iterator[Cluster]:
    """Start everything (see the module docstring); stop and remove it all on exit.

    The database is created on the PostgreSQL server at 127.0.0.1:``postgres_port``; the
    broker is a fresh vhost of the machine's RabbitMQ, or, given another ``rabbitmq_port``,
    the default vhost of a node of the caller's own there (``cluster.own_rabbitmq``). A test
    that restarts a service passes its own: the machine's are shared with other tests.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    own_broker = rabbitmq_port != RABBITMQ_PORT
    with (
        postgres_database(postgres_port) as database,
        contextlib.nullcontext("/") if own_broker else rabbitmq_vhost() as vhost,
        moto_s3(BUCKET, log=workdir / "moto.log") as s3,
        SimulatedHosts(hosts) as simulated,
    ):
        relay_services(simulated, s3.port, postgres_port=postgres_port, rabbitmq_port=rabbitmq_port)
        state = Cluster(
            workdir, database, vhost, s3, simulated, postgres_port=postgres_port,
            rabbitmq_port=rabbitmq_port,
        )  # fmt: skip
        state.home.mkdir(exist_ok=True)
        (state.home / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
        env = {**os.environ, **state.env(), "DAGSTER_HOME": str(state.home)}
        env["TMPDIR"] = str(_folder(workdir / "tmp"))  # the daemon side's mirror
        # The schema first: workers that create it at the same time retry, loudly.
        subprocess.run([str(BIN / "dagster"), "instance", "migrate"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        try:
            for host in simulated.hosts:
                state.start_worker(host)
            command = [str(BIN / "dagster"), "dev", "-w", str(PROJECT / "workspace.yaml")]
            state.dev = start_dev(
                command, PROJECT, env, free_port(), state.home, workdir, workdir, workdir
            )
            yield state
        finally:
            if state.dev is not None:
                stop_dagster_dev(state.dev)
            for worker in state.workers.values():
                worker.kill()


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A RabbitMQ virtual host of this cluster's own (guest may use it), deleted afterwards:
    no queue, message or exchange is shared with another test or run."""
    name = f"sc_assets_{uuid.uuid4().hex[:10]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    try:
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
        yield name
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True)


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- what the demo and the test read back ----------------------------------------------------


@contextlib.contextmanager
def instance_of(state: Cluster):
    """The cluster's Dagster instance, opened from this process (PostgreSQL at 127.0.0.1)."""
    from dagster import DagsterInstance

    saved = dict(os.environ)
    os.environ.update({**state.env(), "DAGSTER_HOME": str(state.home)})
    try:
        with DagsterInstance.from_config(str(state.home)) as instance:
            yield instance
    finally:
        os.environ.clear()
        os.environ.update(saved)


def sample_hosts(instance) -> dict[str, str]:
    """Sample -> the host whose worker materialized it last (its ``host`` metadata)."""
    from dagster import AssetKey, AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("sample_adata")), limit=10_000, ascending=False
    ).records
    found: dict[str, str] = {}
    for record in records:  # newest first: the first of each partition is its latest
        materialization = record.asset_materialization
        found.setdefault(materialization.partition, str(materialization.metadata["host"].value))
    return found


def merged_samples(instance) -> list[str]:
    """The samples of the latest merged_adata, or [] before the first merge."""
    from dagster import AssetKey

    event = instance.get_latest_materialization_event(AssetKey("merged_adata"))
    return list(event.asset_materialization.metadata["samples"].value) if event else []


def wait_until(predicate, *, timeout: float, what: str, state: Cluster, interval: float = 1):
    """Poll ``predicate`` until it returns something truthy (fails with the logs' tails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    logs = [state.dev.log, *sorted(state.workdir.glob("worker-*.log"))]
    tails = "\n".join(f"--- {log.name}\n" + _tail(log) for log in logs if log.exists())
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    from sc_assets.core.demo import write_demo_series
    from sc_assets.simulated_hosts import available

    parser = argparse.ArgumentParser(prog="make cluster-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--scale", type=float, default=0.02)
    args = parser.parse_args(argv)
    ok, reason = available()
    if not ok:
        print(f"cluster-demo: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sc-assets-cluster-") as folder:
        workdir = Path(folder)
        files = write_demo_series(_folder(workdir / "demo"), scale=args.scale, samples=args.samples)
        services = "a PostgreSQL database, a RabbitMQ vhost, moto's S3 API, dagster dev"
        print(f"cluster-demo: {len(files)} demo samples; starting {services} and two workers")
        started = time.monotonic()
        with cluster(workdir) as state:
            print(f"cluster-demo: up in {time.monotonic() - started:.0f} s; the UI is at "
                  f"{state.dev.url}; uploading to s3://{BUCKET}/inbox")  # fmt: skip
            state.upload(files)
            keys = sorted(p.name.removesuffix("_count_matrix.csv.gz") for p in files)
            with instance_of(state) as instance:
                wait_until(
                    lambda: merged_samples(instance) == keys,
                    timeout=600, what="the merge of every sample", state=state,
                )  # fmt: skip
                hosts = sample_hosts(instance)
            print(f"\n{'sample':<20} host")
            for key in keys:
                print(f"{key:<20} {hosts.get(key, '-')}")
            per_host = {h: sum(v == h for v in hosts.values()) for h in sorted(set(hosts.values()))}
            stored = sorted(state.s3.client().list_objects_v2(Bucket=BUCKET, Prefix="storage/")
                            .get("Contents", []), key=lambda o: o["Key"])  # fmt: skip
            merged = next(o for o in stored if o["Key"].endswith("merged_adata.h5ad"))
            print(f"\nruns per host: {per_host}")
            print(f"s3://{BUCKET}/{merged['Key']}: {merged['Size'] / 1e6:.1f} MB, "
                  f"{len(keys)} samples, in {time.monotonic() - started:.0f} s")  # fmt: skip
        print("cluster-demo: everything stopped and removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
