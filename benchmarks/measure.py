"""Run one measured item in a fresh process: wall time, peak RSS, CPU time, machine load.

Every item is a new process, so imports count and memory is per process. The peak RSS comes
from ``wait4``: Linux reports the maximum of the process's own peak and those of the
descendants it waited for, i.e. the largest process of the tree (``sc-assets ingest`` reaps
its worker processes, so they are covered).

The item is started by a tiny launcher (:data:`_LAUNCHER`), not by this process: Linux also
counts in a child's peak the memory of the process it was forked from, at the time of the
exec, so a child of this process (a few hundred MB, it imports AnnData) would never report
less than this process's size. The launcher is a few MB.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PYTHON = sys.executable

#: ``python -S -c _LAUNCHER RSS_FILE COMMAND...``: runs COMMAND, waits for it, writes its peak
#: RSS (KiB) to RSS_FILE and exits with its exit code. posix_spawn: no copy of this process.
_LAUNCHER = """
import os, sys
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Measurement:
    """One run of one item."""

    wall_s: float
    peak_rss_mb: float
    """Largest resident set of the process tree, in MB (10**6 bytes)."""
    cpu_s: float
    """User + system CPU seconds of the process and its reaped descendants."""
    others_cpu: float
    """CPU cores that other processes of the machine used on average during the run: the
    contention this run saw (0 = a quiet machine; 2 = the other agents took both cores)."""
    load_1min: float
    """The 1-minute load average when the run started."""
    result: dict[str, Any] = field(default_factory=dict)
    """The JSON object the process printed on its last stdout line, if any (inner timings)."""
    log: Path | None = None
    """Where the process's stderr went."""
    tree_mb: dict[str, float] = field(default_factory=dict)
    """With ``run(watch_tree=True)``: the peak RSS of the item's main process (``"main"``)
    and the largest of its descendants per kind (``"worker"``: multiprocessing's spawned
    processes, ``"other"``), sampled every 0.2 s."""

    @property
    def cores_used(self) -> float:
        """Average cores this run kept busy (CPU time over wall time)."""
        return self.cpu_s / self.wall_s if self.wall_s else 0.0


class ItemFailed(RuntimeError):
    """A measured process exited with an error."""


def _busy_seconds() -> float:
    """CPU seconds spent non-idle by the whole machine since boot (all cores)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


class _TreeWatch(threading.Thread):
    """Samples the peak RSS (``VmHWM``) of every process below ``root`` until stopped.

    ``wait4`` only gives the largest process of a tree; this tells which one it was.
    """

    def __init__(self, root: int, interval_s: float = 0.2) -> None:
        super().__init__(name="tree-watch", daemon=True)
        self.root, self.interval_s = root, interval_s
        self.peaks: dict[int, tuple[str, int]] = {}
        """pid -> (kind, peak KiB)."""
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = Path(entry.path, "stat").read_text()
                    parent = int(stat.rsplit(")", 1)[1].split()[1])
                    children.setdefault(parent, []).append(int(entry.name))
        main = children.get(self.root, [])  # the launcher's child: the item itself
        stack = list(main)
        while stack:
            pid = stack.pop()
            stack += children.get(pid, [])
            with contextlib.suppress(OSError, StopIteration):
                status = Path(f"/proc/{pid}/status").read_text().splitlines()
                hwm = int(next(line for line in status if line.startswith("VmHWM")).split()[1])
                kind, peak = self.peaks.get(pid, ("", 0))
                if not kind:  # classified once: an exiting process's cmdline reads empty
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    is_worker = b"spawn_main" in cmdline
                    kind = "main" if pid in main else "worker" if is_worker else "other"
                self.peaks[pid] = (kind, max(hwm, peak))

    def by_kind_mb(self) -> dict[str, float]:
        peaks: dict[str, float] = {}
        for kind, kib in self.peaks.values():
            peaks[kind] = max(peaks.get(kind, 0.0), kib * 1024 / 1e6)
        return peaks


def run(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    watch_tree: bool = False,
) -> Measurement:
    """Run ``command`` to completion and measure it; raise :class:`ItemFailed` on failure.

    stderr goes to ``log`` (or is kept for the error message); stdout's last line is parsed
    as JSON when it is an object. ``watch_tree`` also samples each process's peak (see
    :attr:`Measurement.tree_mb`).
    """
    full_env = {**os.environ, **(env or {})}
    load = os.getloadavg()[0]
    with tempfile.NamedTemporaryFile("r", prefix="rss-") as rss:
        launcher = [PYTHON, "-S", "-c", _LAUNCHER, rss.name, *command]
        busy0, t0 = _busy_seconds(), time.perf_counter()
        with open(log or os.devnull, "ab") as err:
            proc = subprocess.Popen(
                launcher, env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=err
            )
            watch = _TreeWatch(proc.pid)
            if watch_tree:
                watch.start()
            out = proc.stdout.read() if proc.stdout else b""
            _, status, usage = os.wait4(proc.pid, 0)
            watch.stopped.set()
        wall = time.perf_counter() - t0
        busy = _busy_seconds() - busy0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if proc.stdout:
            proc.stdout.close()
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            where = f"; see {log}" if log else ""
            raise ItemFailed(f"{' '.join(command)} exited {proc.returncode}{where}\n{text[-2000:]}")
        peak_kib = int(rss.read())
    # The launcher's own CPU time (a few ms) is counted: it is negligible.
    cpu = usage.ru_utime + usage.ru_stime
    lines = text.strip().splitlines()
    result = {}
    if lines and lines[-1].startswith("{"):
        result = json.loads(lines[-1])
    return Measurement(
        wall_s=wall,
        peak_rss_mb=peak_kib * 1024 / 1e6,
        cpu_s=cpu,
        others_cpu=max(0.0, (busy - cpu) / wall),
        load_1min=load,
        result=result,
        log=log,
        tree_mb=watch.by_kind_mb(),
    )


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values (a section that measured nothing shows as NaN)."""
    return statistics.median(values) if values else float("nan")


def wait_for_quiet(*, max_wait_s: float, below_cores: float = 0.5, window_s: float = 2.0) -> float:
    """Wait until other processes use fewer than ``below_cores`` cores over ``window_s``.

    Other agents share the machine: starting a section while they run a build would measure
    them too. Gives up after ``max_wait_s``; returns the cores in use in the last window.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        busy0 = _busy_seconds()
        time.sleep(window_s)
        used = (_busy_seconds() - busy0) / window_s
        if used < below_cores or time.monotonic() >= deadline:
            return used
