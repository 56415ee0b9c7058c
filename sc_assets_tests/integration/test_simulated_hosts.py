"""Simulated hosts isolate what a distributed test needs isolated, and Dagster runs on them.

A host reaches the machine's services only at the bridge's address (127.0.0.1 inside is its
own), moto's S3 included, writes only to its own memory, sees the test's folders empty, has
its own hostname, can be lost at once (SIGKILL), and leaves nothing behind. Then a real
Dagster job launched with the CeleryRunLauncher runs on workers on two hosts, and its runs say
where they ran.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sc_assets.simulated_hosts import SimulatedHosts, available, image_under_private_dirs
from sc_assets_tests.integration.cluster import (
    BIN,
    answers,
    celery_backend_url,
    celery_queue,
    celery_yaml,
    instance_yaml,
    moto_s3,
    postgres_database,
    relay_services,
    skip_unless_cluster_possible,
    start_celery_worker,
    wait_until_ready,
)
from sc_assets_tests.integration.conftest import PROJECT, free_port

pytestmark = pytest.mark.integration

#: A folder of this machine, with files in it, that the hosts are told to hide.
HIDDEN = Path(__file__).parent


def run_python(host, script: str) -> list[str]:
    """The lines ``script`` prints on ``host`` (it must succeed)."""
    result = host.run([sys.executable, "-c", script])
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def leftovers(prefix: str) -> str:
    """Namespaces and interfaces whose names start with ``prefix``, as ``ip`` lists them."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    listed += subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return "\n".join(line for line in listed.splitlines() if f"{prefix}-" in line)


@pytest.fixture
def hosts():
    ok, reason = available()
    if not ok:
        pytest.skip(reason)
    with SimulatedHosts(2, hide=[HIDDEN]) as hosts:
        yield hosts


def test_services_are_reached_only_at_the_bridge_address(hosts):
    for name, port in (("PostgreSQL", 5432), ("Redis", 6379)):
        if not answers(port):
            pytest.skip(f"no {name} server answers at 127.0.0.1:{port}")
        hosts.relay(port)
    bridge = hosts.bridge_ip
    lines = run_python(
        hosts[0],
        f"""
import socket, psycopg2
connection = psycopg2.connect(host="{bridge}", user="postgres", dbname="postgres")
cursor = connection.cursor()
cursor.execute("select 1")
print("postgres", cursor.fetchone()[0])
with socket.create_connection(("{bridge}", 6379), timeout=5) as redis:
    redis.sendall(b"PING\\r\\n")
    print("redis", redis.recv(64).decode().strip())
for port in (5432, 6379):  # the host's own loopback: nothing listens there
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5)
        print(port, "reached")
    except ConnectionRefusedError:
        print(port, "refused")
""",
    )
    assert lines == ["postgres 1", "redis +PONG", "5432 refused", "6379 refused"]


def test_a_host_writes_only_to_its_own_memory_and_sees_no_test_folder(hosts, tmp_path):
    host1, host2 = hosts.hosts
    (tmp_path / "outside.txt").write_text("the test's")
    note = f"/tmp/note-{uuid.uuid4().hex}"
    probe = PROJECT / f".probe-{uuid.uuid4().hex}"
    lines = run_python(
        host1,
        f"""
import os
open("{note}", "w").write("host1's")
try:
    open("{probe}", "w")
except OSError as error:
    print(error.strerror)
print(os.path.exists("{tmp_path / "outside.txt"}"), os.listdir("{HIDDEN}"))
print(open("{PROJECT / "README.md"}").readline().strip())  # the shared image, read-only
""",
    )
    assert lines == ["Read-only file system", "False []", "# sc-assets"]
    assert not probe.exists()
    assert host1.path(note).read_text() == "host1's"  # seen from outside, in host1 only
    assert not Path(note).exists()
    assert run_python(host2, f"import os; print(os.path.exists('{note}'))") == ["False"]
    assert any(HIDDEN.iterdir())  # hidden from the hosts, not emptied


def test_each_host_has_its_own_hostname(hosts):
    for host in hosts.hosts:
        assert run_python(host, "import socket; print(socket.gethostname())") == [host.name]


def test_a_killed_host_loses_its_processes_and_scratch_and_no_other(hosts):
    host1, host2 = hosts.hosts
    lost = host1.popen(["sleep", "300"])
    survivor = host2.popen(["sleep", "300"])
    host1.put("/tmp/work.txt", "half done")
    try:
        host1.kill()
        assert lost.wait(timeout=10) == -signal.SIGKILL
        assert host1.pids() == []
        assert survivor.poll() is None
        # booted again, empty: only the image's folders are there when it lies under /tmp
        image = {Path(p).relative_to("/tmp").parts[0] for p in image_under_private_dirs()
                 if p.startswith("/tmp/")}  # fmt: skip
        assert set(host1.run(["ls", "-A", "/tmp"]).stdout.split()) == image
    finally:
        survivor.kill()
        survivor.wait()


def test_nothing_is_left_after_the_context_even_from_a_killed_run():
    ok, reason = available()
    if not ok:
        pytest.skip(reason)
    prefix, port = f"st{uuid.uuid4().hex[:6]}", free_port()
    # An earlier run, killed with its hosts busy: its own prefix and a default one.
    script = f"""
from sc_assets.simulated_hosts import SimulatedHosts
for hosts in (SimulatedHosts(2, prefix="{prefix}"), SimulatedHosts(1)):
    hosts.__enter__()
    hosts.relay({port})
    print(hosts.prefix, hosts.bridge_ip, hosts[0].popen(["sleep", "300"]).pid, flush=True)
import time; time.sleep(300)
"""
    earlier = subprocess.Popen(
        [sys.executable, "-c", script], cwd=PROJECT, stdout=subprocess.PIPE, text=True
    )
    made = [earlier.stdout.readline().split() for _ in range(2)]
    earlier.kill()
    earlier.wait()
    assert all(leftovers(name) for name, _, _ in made)

    with SimulatedHosts(1, prefix=prefix) as hosts:
        assert len(leftovers(prefix).splitlines()) == 3  # its own bridge, veth and namespace
        assert not any(alive(int(pid)) for _, _, pid in made)
        hosts.relay(port)
        hosts[0].popen(["sleep", "300"])
        made.append([prefix, hosts.bridge_ip, str(hosts[0].pids()[-1])])
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
    for name, bridge_ip, pid in made:
        assert not leftovers(name)
        assert f"{bridge_ip}:{port}" not in listening
        assert not alive(int(pid))


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


HOSTNAME_JOB = """\
import socket
import time

from dagster import OpExecutionContext, in_process_executor, job, op


@op(config_schema={"seconds": float})
def report_host(context: OpExecutionContext) -> str:
    context.log.info(f"ran on {socket.gethostname()}")
    time.sleep(context.op_config["seconds"])
    return socket.gethostname()


# In process: a Celery worker's pool process is daemonic and may not start step processes.
@job(executor_def=in_process_executor)
def hostname_job():
    report_host()
"""

LOCAL = "127.0.0.1"
#: Runs launch at once (no daemon in this test).
AT_ONCE = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""


def host_of_run(instance, run_id: str) -> str | None:
    """The host a run of ``hostname_job`` says it ran on, from its event log."""
    for record in instance.all_logs(run_id):
        if record.user_message.startswith("ran on "):
            return record.user_message.removeprefix("ran on ")
    return None


def test_runs_launched_with_celery_run_on_workers_of_both_hosts(tmp_path):
    skip_unless_cluster_possible()
    from dagster import DagsterInstance, DagsterRunStatus

    job = tmp_path / "code" / "hostname_job.py"
    job.parent.mkdir()
    job.write_text(HOSTNAME_JOB)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with postgres_database() as database, celery_queue() as queue, SimulatedHosts(2) as hosts:
        relay_services(hosts)
        bridge = hosts.bridge_ip
        # Task states in PostgreSQL, as deploy/ has them: rpc:// would leave a reply queue per
        # launching process in the broker for a day.
        backends = {address: celery_backend_url(database, address) for address in (LOCAL, bridge)}
        (home / "dagster.yaml").write_text(
            instance_yaml(database, LOCAL, backend=backends[LOCAL], queue=queue, extra=AT_ONCE)
        )
        worker_yaml = instance_yaml(database, bridge, backend=backends[bridge], queue=queue)
        # Late acks: a busy worker reserves no second run, so two runs take two hosts.
        worker_celery = celery_yaml(bridge, backend=backends[bridge], acks_late=True)
        logs = {host.name: tmp_path / f"{host.name}.log" for host in hosts.hosts}
        # The launching side's instance first: it creates the schema the workers then use.
        with DagsterInstance.from_config(str(home)) as instance:
            workers = [
                start_celery_worker(
                    host,
                    instance=worker_yaml,
                    celery=worker_celery,
                    log=logs[host.name],
                    code={job: HOSTNAME_JOB},
                    queue=queue,
                    wait=False,
                )
                for host in hosts.hosts
            ]
            for worker, log in zip(workers, logs.values(), strict=True):
                wait_until_ready(worker, log)
            # Two runs at once, each long enough that one worker cannot take both.
            config = json.dumps({"ops": {"report_host": {"config": {"seconds": 3}}}})
            launch = [str(BIN / "dagster"), "job", "launch", "-f", str(job), "-j", "hostname_job"]
            launches = [
                subprocess.Popen(
                    [*launch, "--config-json", config],
                    cwd=job.parent,
                    env={**os.environ, "DAGSTER_HOME": str(home)},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for _ in range(2)
            ]
            for process in launches:
                out, _ = process.communicate(timeout=120)
                assert process.returncode == 0, out

            deadline, runs = time.monotonic() + 120, instance.get_runs()
            while not all(run.is_finished for run in runs):
                if time.monotonic() > deadline:
                    consoles = "\n".join(log.read_text()[-3000:] for log in logs.values())
                    pytest.fail(f"runs not finished after 120 s: {runs}\n{consoles}")
                time.sleep(0.5)
                runs = instance.get_runs()
            assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 2
            ran_on = {host_of_run(instance, run.run_id) for run in runs}
    assert ran_on == set(logs)  # the hosts' names
    print(f"runs ran on {sorted(ran_on)}")


def test_a_host_reads_and_writes_moto_s3_through_the_relay(hosts, tmp_path):
    with moto_s3("handover", log=tmp_path / "moto.log") as s3:
        hosts.relay(s3.port)
        script = """
import boto3
s3 = boto3.client("s3")
s3.put_object(Bucket="handover", Key="from-host1.txt", Body=b"written by host1")
print(s3.get_object(Bucket="handover", Key="from-host1.txt")["Body"].read().decode())
"""
        result = hosts[0].run([sys.executable, "-c", script], env=s3.env(hosts.bridge_ip))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "written by host1"
        outside = s3.client().get_object(Bucket="handover", Key="from-host1.txt")
        assert outside["Body"].read() == b"written by host1"  # the object store is shared
