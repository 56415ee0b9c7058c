"""Real processes: ``dagster dev`` (webserver + daemon + code server) on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sc_assets.dagster_home import ensure_dagster_home

PROJECT = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).with_name("dagster")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DagsterDev:
    """A running ``dagster dev`` and the folders it works on."""

    url: str
    home: Path
    data_dir: Path
    storage_dir: Path
    process: subprocess.Popen
    log: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_until(self, predicate, *, timeout: float, what: str, interval: float = 1.0):
        """Poll ``predicate`` until it returns a truthy value; fail with the server log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"dagster dev exited while waiting for {what}:\n{self.tail()}")
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_dagster_dev(tmp_path: Path, *, sensor_interval: int = 2) -> DagsterDev:
    home = ensure_dagster_home(tmp_path / "dagster_home")
    data_dir, storage_dir = tmp_path / "data", tmp_path / "storage"
    data_dir.mkdir(exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SC_ASSETS_DATA_DIR": str(data_dir),
        "SC_ASSETS_STORAGE_DIR": str(storage_dir),
        "SC_ASSETS_SENSOR_INTERVAL": str(sensor_interval),
    }
    command = [str(DAGSTER), "dev", "-w", str(PROJECT / "workspace.yaml")]
    return start_dev(command, PROJECT, env, port, home, data_dir, storage_dir, tmp_path)


def start_dev(
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    port: int,
    home: Path,
    data_dir: Path,
    storage_dir: Path,
    tmp_path: Path,
    location: str = "sc_assets",
) -> DagsterDev:
    """``command`` (``dagster dev`` or ``dg dev``) on 127.0.0.1:``port``, once ``location``
    has loaded."""
    log = tmp_path / "dagster_dev.log"
    process = subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)],
        cwd=cwd,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole
    )
    dev = DagsterDev(f"http://127.0.0.1:{port}", home, data_dir, storage_dir, process, log)
    dev.wait_until(lambda: _location_loaded(dev, location), timeout=120, what="the code location")
    return dev


def stop_dagster_dev(dev: DagsterDev, *, grace: float = 5) -> None:
    """Stop ``dagster dev`` as Ctrl-C does, then whatever is left of its process group.

    While shutting down, ``dagster dev`` restarts its code server when it sees it exit; that
    orphan (and a run worker still busy) would linger until its heartbeat timeout, so the
    group is killed once the main process is gone or ``grace`` seconds have passed.
    """
    if dev.process.poll() is None:
        os.killpg(dev.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            dev.process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):  # unless the whole group has exited
        os.killpg(dev.process.pid, signal.SIGKILL)
    dev.process.wait(timeout=10)


def _location_loaded(dev: DagsterDev, location: str = "sc_assets") -> bool:
    try:
        data = dev.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name "
            "locationOrLoadError { __typename } } } } }"
        )
    except OSError:
        return False
    entries = data["workspaceOrError"].get("locationEntries", [])
    return any(
        e["name"] == location
        and e["locationOrLoadError"]
        and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
        for e in entries
    )


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[DagsterDev]:
    """``dagster dev`` on a temporary DAGSTER_HOME, data and storage folder; stopped after."""
    dev = start_dagster_dev(tmp_path)
    try:
        yield dev
    finally:
        stop_dagster_dev(dev)


#: The code location's repository, as GraphQL selectors name it.
REPOSITORY_SELECTOR = {"repositoryLocationName": "sc_assets", "repositoryName": "__repository__"}
SENSOR_NAMES = ("new_samples_sensor", "merge_automation_sensor")
#: Long enough that no sensor ticks a second time during a test.
IDLE_SENSOR_INTERVAL = 3600

_SENSOR_TICKS = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 1) { status } } }
  }
}
"""


def wait_for_first_ticks(dev: DagsterDev, sensor_names=SENSOR_NAMES, *, timeout: float = 120):
    """Wait until each sensor has finished one tick (the daemon ticks them right at start)."""

    def ticked(name: str) -> bool:
        data = dev.graphql(_SENSOR_TICKS, {"selector": {**REPOSITORY_SELECTOR, "sensorName": name}})
        sensor = data["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        ticks = sensor["sensorState"]["ticks"]
        return bool(ticks) and ticks[0]["status"] != "STARTED"

    for name in sensor_names:
        dev.wait_until(lambda name=name: ticked(name), timeout=timeout, what=f"{name}'s first tick")


@pytest.fixture
def idle_dagster_dev(tmp_path: Path) -> Iterator[DagsterDev]:
    """``dagster dev`` whose sensors are on but have nothing to do for the whole test.

    Sensors are RUNNING by default and the daemon ticks them at start: the data folder is
    still empty then, and the next tick is an hour away. So whatever the test puts in the data
    folder afterwards is ingested only by what the test launches (the UI, GraphQL), not by the
    sensor or the merge automation racing it.
    """
    dev = start_dagster_dev(tmp_path, sensor_interval=IDLE_SENSOR_INTERVAL)
    try:
        wait_for_first_ticks(dev)
        yield dev
    finally:
        stop_dagster_dev(dev)
