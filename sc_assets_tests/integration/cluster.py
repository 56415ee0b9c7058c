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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


def relay_services(
    hosts: SimulatedHosts,
    *ports: int,
    postgres_port: int = POSTGRES_PORT,
    rabbitmq_port: int = RABBITMQ_PORT,
) -> None:
    """Make PostgreSQL, RabbitMQ (the machine's, or a test's own at the ports given) and
    ``ports`` (e.g. moto's) reachable from the hosts."""
    for port in (postgres_port, rabbitmq_port, *ports):
        hosts.relay(port)


@contextlib.contextmanager
def postgres_database(port: int = POSTGRES_PORT) -> Iterator[str]:
    """A fresh PostgreSQL database (``sc_assets_<random>``) of the server at 127.0.0.1:``port``,
    dropped afterwards; its name."""
    name = f"sc_assets_{uuid.uuid4().hex[:10]}"
    _admin(port, f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        # A connection of its own: the server may have restarted meanwhile.
        _admin(port, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(port: int, statement: str) -> None:
    import psycopg2

    admin = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(statement)
    finally:
        admin.close()


def postgres_url(database: str, address: str = "127.0.0.1", port: int = POSTGRES_PORT) -> str:
    """SQLAlchemy URL of ``database`` at ``address`` (driver named: see the README)."""
    return f"postgresql+psycopg2://postgres@{address}:{port}/{database}"


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
        wait_for(lambda: _http_answers(f"http://127.0.0.1:{port}/"), process, 30, "moto_server")
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
    what = f"the worker logging to {log}"
    wait_for(lambda: b" ready." in log.read_bytes(), worker, timeout, what)


def _http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:  # an answer all the same
        return True
    except OSError:
        return False


def wait_for(ready, process: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll ``ready`` until true; fail if ``process`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}) before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.1)


# --- services of a test's own, which it may restart ------------------------------------------
# The machine's PostgreSQL and RabbitMQ are shared with tests running in parallel: a test that
# restarts a service starts its own, from the machine's installed binaries, as their users.

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``pg_ctl``."""
    found = [
        folder
        for folder in Path("/usr/lib/postgresql").glob("*/bin")
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists()
    ]
    return max(found, key=lambda f: int(f.parent.name) if f.parent.name.isdigit() else 0,
               default=None)  # fmt: skip


def skip_unless_own_services_possible() -> None:
    """Skip the test, saying why, unless it can run a PostgreSQL server and a RabbitMQ node of
    its own (as root, through ``runuser``, with the Debian packages' binaries and users) and
    simulated hosts can be made."""
    import pwd

    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("starting a PostgreSQL server and a RabbitMQ node of the test's own needs "
                    "root and runuser (they run as the postgres and rabbitmq users)")  # fmt: skip
    for user in ("postgres", "rabbitmq"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            pytest.skip(f"no {user} user to run the test's own server as")
    if postgres_bin() is None:
        pytest.skip("no initdb/pg_ctl under /usr/lib/postgresql/<version>/bin")
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.skip(f"no {RABBITMQ_BIN}/rabbitmq-server to start a RabbitMQ node")
    ok, reason = available()
    if not ok:
        pytest.skip(reason)


def _as_user(user: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    return ["runuser", "-u", user, "--", "env", *(f"{k}={v}" for k, v in (env or {}).items()),
            *argv]  # fmt: skip


def _owned_folder(prefix: str, user: str) -> Path:
    """A new folder under /tmp owned by ``user`` (a test's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.chown(folder, user, user)
    return folder


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster of a test's own on 127.0.0.1:``port`` (trust auth, user
    ``postgres``, no fsync), run as the postgres user; see :func:`own_postgres`."""

    port: int
    folder: Path
    bin: Path

    def pg_ctl(self, *args: str) -> None:
        argv = [str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-w", "-t", "60", *args]
        subprocess.run(_as_user("postgres", argv), check=True, capture_output=True, cwd="/")

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self.pg_ctl("-l", str(self.folder / "server.log"), "-o", options, "start")  # fmt: skip

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is closed, open transactions are
        rolled back; returns once the server accepts connections again."""
        self.pg_ctl("-l", str(self.folder / "server.log"), "-m", "fast", "restart")

    def log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """``initdb`` a cluster in a new folder, start it on a free port; stopped and removed on
    exit."""
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("no initdb/pg_ctl under /usr/lib/postgresql/<version>/bin")
    folder = _owned_folder("sc-assets-pg-", "postgres")
    server = OwnPostgres(free_port(), folder, binaries)
    try:
        initdb = [str(binaries / "initdb"), "-D", str(folder / "data"), "-U", "postgres",
                  "-A", "trust", "-E", "UTF8", "--no-sync"]  # fmt: skip
        subprocess.run(_as_user("postgres", initdb), check=True, capture_output=True, cwd="/")
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class OwnRabbitMQ:
    """A RabbitMQ node of a test's own on 127.0.0.1:``port`` (its default vhost, user guest),
    run as the rabbitmq user; its queues and persistent messages outlive a restart, as a
    deployment's broker's do. See :func:`own_rabbitmq`."""

    port: int
    dist_port: int  # Erlang distribution (rabbitmqctl's way in)
    node: str
    folder: Path
    process: subprocess.Popen | None = None

    def url(self, address: str = "127.0.0.1") -> str:
        return f"pyamqp://guest@{address}:{self.port}//"

    def _env(self) -> dict[str, str]:
        return {
            "HOME": "/var/lib/rabbitmq",  # its Erlang cookie, shared with rabbitmqctl
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_PID_FILE": str(self.folder / "pid"),
        }

    def ctl(self, *args: str) -> None:
        argv = [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args]
        subprocess.run(_as_user("rabbitmq", argv, self._env()), check=True, capture_output=True,
                       cwd="/", timeout=150)  # fmt: skip

    def start(self) -> None:
        """Start the node; returns once it accepts connections."""
        with (self.folder / "console.log").open("ab") as console:
            self.process = subprocess.Popen(
                _as_user("rabbitmq", [str(RABBITMQ_BIN / "rabbitmq-server")], self._env()),
                stdout=console, stderr=subprocess.STDOUT, cwd="/",
                start_new_session=True,  # the node's Erlang processes too: see own_rabbitmq
            )  # fmt: skip
        self.ctl("wait", str(self.folder / "pid"), "--timeout", "120")
        wait_for(lambda: answers(self.port), self.process, 30, "the RabbitMQ node")

    def stop(self) -> None:
        """Stop the node cleanly (as ``systemctl stop`` does): its connections are closed."""
        self.ctl("stop", str(self.folder / "pid"))
        if self.process is not None:
            self.process.wait(timeout=60)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def own_rabbitmq() -> Iterator[OwnRabbitMQ]:
    """Start a RabbitMQ node (no plugins) on a free port; stopped and removed on exit."""
    folder = _owned_folder("sc-assets-rabbitmq-", "rabbitmq")
    port = free_port()
    (folder / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{port}\n")
    (folder / "enabled_plugins").write_text("[].\n")
    for path in folder.iterdir():
        shutil.chown(path, "rabbitmq", "rabbitmq")
    node = OwnRabbitMQ(port, free_port(), f"sc_assets_{uuid.uuid4().hex[:10]}@localhost", folder)
    try:
        node.start()
        yield node
    finally:
        if node.process is not None:
            with contextlib.suppress(subprocess.SubprocessError):
                node.stop()
        if node.process is not None:  # it did not stop: kill it, Erlang VM and all
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait()
        shutil.rmtree(folder, ignore_errors=True)
