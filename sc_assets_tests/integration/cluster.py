"""A small cluster on this machine, for tests of the distributed deployment.

The services run on 127.0.0.1 (PostgreSQL, RabbitMQ, and moto's S3 API server, started here);
Dagster Celery workers run on simulated hosts (:mod:`sc_assets.simulated_hosts`) and reach
the services only at the bridge's address, through its relays. Each side reads its own
``DAGSTER_HOME``: the launching side's names the services at 127.0.0.1, a worker's at the
bridge's address (the same database and broker, by two routes). A worker's home, its Celery
config and the code it runs are copied onto its host (its private tmpfs), as a deployment
puts them on a machine: nothing reaches it through a folder the test shares.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from sc_assets.simulated_hosts import Host, SimulatedHosts, available
from sc_assets_tests.integration.conftest import free_port

BIN = Path(sys.executable).parent
POSTGRES_PORT, RABBITMQ_PORT = 5432, 5672
#: Fake credentials for moto (it accepts any); never real ones.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: Where a worker's files go on its host (its scratch tmpfs).
WORKER_HOME, WORKER_CELERY_YAML = "/tmp/dagster_home", "/tmp/celery.yaml"


def answers(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def skip_unless_cluster_possible() -> None:
    """Skip the test, saying why, unless PostgreSQL and RabbitMQ answer on 127.0.0.1 and
    simulated hosts can be made."""
    for name, port in (("PostgreSQL", POSTGRES_PORT), ("RabbitMQ", RABBITMQ_PORT)):
        if not answers(port):
            pytest.skip(f"no {name} server answers at 127.0.0.1:{port}")
    ok, reason = available()
    if not ok:
        pytest.skip(reason)


def relay_services(hosts: SimulatedHosts, *ports: int) -> None:
    """Make PostgreSQL, RabbitMQ and ``ports`` (e.g. moto's) reachable from the hosts."""
    for port in (POSTGRES_PORT, RABBITMQ_PORT, *ports):
        hosts.relay(port)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database (``sc_assets_<random>``), dropped afterwards; its name."""
    import psycopg2

    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    name = f"sc_assets_{uuid.uuid4().hex[:10]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def postgres_url(database: str, address: str = "127.0.0.1") -> str:
    """SQLAlchemy URL of ``database`` at ``address`` (driver named: see the README)."""
    return f"postgresql+psycopg2://postgres@{address}:{POSTGRES_PORT}/{database}"


def broker_url(address: str = "127.0.0.1") -> str:
    return f"pyamqp://guest@{address}:{RABBITMQ_PORT}//"


@dataclass
class S3Server:
    """moto's S3 API server on 127.0.0.1:``port``, with one bucket."""

    port: int
    bucket: str
    process: subprocess.Popen

    def env(self, address: str = "127.0.0.1") -> dict[str, str]:
        """What a client needs to use it (at ``address``: a host uses the bridge's)."""
        return {**FAKE_AWS, "AWS_ENDPOINT_URL": f"http://{address}:{self.port}"}

    def client(self):
        """A boto3 S3 client of it, for the test's side."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.env()["AWS_ENDPOINT_URL"],
            aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
            region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
        )


@contextlib.contextmanager
def moto_s3(bucket: str = "sc-assets", log: Path | None = None) -> Iterator[S3Server]:
    """Start ``moto_server`` on a free loopback port, create ``bucket``; stopped afterwards."""
    if not (BIN / "moto_server").exists():
        pytest.skip("no moto_server in the venv (the dev extra's moto[server])")
    port = free_port()
    with open(log or os.devnull, "wb") as console:
        process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=console,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(lambda: _http_answers(f"http://127.0.0.1:{port}/"), process, 30, "moto_server")
        server = S3Server(port, bucket, process)
        server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        process.kill()
        process.wait()


def instance_yaml(
    database: str,
    address: str,
    *,
    backend: str = "rpc://",
    queue: str = "dagster",
    extra: str = "",
) -> str:
    """A dagster.yaml: PostgreSQL storage and the CeleryRunLauncher (runs go to ``queue``),
    both at ``address`` (127.0.0.1 for the launching side, the bridge's for a worker), then
    ``extra``."""
    return f"""\
telemetry:
  enabled: false
storage:
  postgres:
    postgres_url: {postgres_url(database, address)}
run_launcher:
  module: dagster_celery.launcher
  class: CeleryRunLauncher
  config:
    broker: {broker_url(address)}
    backend: {backend}
    default_queue: {queue}
{extra}"""


@contextlib.contextmanager
def celery_queue() -> Iterator[str]:
    """A Celery queue of this test's own, deleted afterwards: tests share the broker, and a
    worker must not take another test's run (nor one a killed earlier test left queued)."""
    from kombu import Connection

    name = f"sc_assets_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with Connection(broker_url()) as connection:
            channel = connection.default_channel
            channel.queue_delete(name)
            channel.exchange_delete(name)  # Celery's direct exchange of the same name


def celery_backend_url(database: str, address: str = "127.0.0.1") -> str:
    """A Celery result backend every process can read (the run monitor must see the states
    workers write; ``rpc://`` answers only the process that sent the task): PostgreSQL."""
    return f"db+{postgres_url(database, address)}"


def celery_yaml(address: str, *, backend: str = "rpc://", acks_late: bool = False) -> str:
    """The worker's Celery config (``dagster-celery worker start -y``).

    ``acks_late``: a run's message is acknowledged when the run ends, not when it starts, so a
    busy worker holds no second run (with ``--concurrency=1`` and dagster-celery's prefetch of
    1) and the message of a worker lost mid-run goes back to the queue. Its next taker then
    marks the run failed, but only if the worker's dagster.yaml leaves ``run_monitoring`` off:
    with it on, the taker ignores the run as a duplicate, its task ends SUCCESS, and the run
    stays STARTED.
    """
    return f"""\
execution:
  config:
    broker: {broker_url(address)}
    backend: {backend}
    config_source:
      task_acks_late: {acks_late}
      task_reject_on_worker_lost: {acks_late}
"""


def start_celery_worker(
    host: Host,
    *,
    instance: str,
    celery: str,
    log: Path,
    code: Mapping[Path, str] | None = None,
    env: Mapping[str, str] | None = None,
    queue: str = "dagster",
    concurrency: int = 1,
    celery_args: Sequence[str] = (),
    wait: bool = True,
) -> subprocess.Popen:
    """A Dagster Celery worker for the CeleryRunLauncher on ``host`` (ready, if ``wait``).

    ``instance`` (its dagster.yaml) and ``celery`` (its Celery config) are written onto the
    host, as is ``code`` (files at the paths the launching side's code has, so the worker
    finds the job where the run's origin says). ``concurrency`` runs at a time, named
    ``<host name>@<host name>``; ``celery_args`` go to ``celery worker`` (as deploy/worker.sh's
    ``--max-tasks-per-child=1``). Its console goes to ``log`` (a file of the test). Start it
    once the instance's schema exists (open the launching side's instance first): workers
    that create it at the same time retry (``Retrying failed database creation``).
    """
    host.put(f"{WORKER_HOME}/dagster.yaml", instance)
    host.put(WORKER_CELERY_YAML, celery)
    for path, text in (code or {}).items():
        host.put(path, text)
    argv = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app"]
    argv += ["-y", WORKER_CELERY_YAML, "-q", queue, "--name", host.name]
    argv += ["--", f"--concurrency={concurrency}", *celery_args]
    path = f"{BIN}:/usr/local/bin:/usr/bin:/bin"  # dagster-celery runs `celery` from PATH
    with log.open("wb") as console:
        process = host.popen(
            argv,
            env={"PATH": path, "DAGSTER_HOME": WORKER_HOME, **(env or {})},
            stdout=console,
            stderr=subprocess.STDOUT,
        )
    if wait:
        wait_until_ready(process, log)
    return process


def wait_until_ready(worker: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Wait until a worker started by :func:`start_celery_worker` consumes its queue."""
    _wait(lambda: b" ready." in log.read_bytes(), worker, timeout, f"the worker logging to {log}")


def _http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:  # an answer all the same
        return True
    except OSError:
        return False


def _wait(ready, process: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}) before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.1)
