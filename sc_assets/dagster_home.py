"""The persistent Dagster instance folder (``DAGSTER_HOME``) and its ``dagster.yaml``."""

from __future__ import annotations

import os
from pathlib import Path

#: Seconds between two looks of the run monitor at in-progress runs: a run whose worker
#: process vanished is marked failed within this (plus a daemon tick), its queue slot freed.
MONITOR_INTERVAL_S = 10

#: Automatic re-launches of a run whose worker died (at most; a failed step is not retried).
MAX_RUN_RETRIES = 2

_HEADER = "# Written by sc-assets (sc_assets/dagster_home.py)."


def _queue(cores: int) -> str:
    """Telemetry off and the run queue: one run per core (``sc-assets ingest --workers``'s
    default too)."""
    note = f"one run per core on a {cores}-core machine; more only queue for CPU"
    return f"""\
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: {cores}  # {note}
run_queue:
  dequeue_interval_seconds: 2  # start a queued run soon after a slot frees (default 5)
"""


#: What round 1 wrote after the header (on any machine: two runs at once).
_ROUND_1_COMMON = _queue(2)

_FAULTS = f"""\
# Faults heal themselves. A run whose worker process dies (kill -9, the out-of-memory killer)
# is marked failed by the code server or, if nobody watched it, by the run monitor, which
# checks every run worker's pid (sc_assets.run_launcher); run retries then launch it again.
# A failed step (a malformed file, a failed ERROR check) is deterministic: not retried.
# Retrying is safe: every file is written under a temporary name and renamed into place.
run_launcher:
  module: sc_assets.run_launcher
  class: MonitoredRunLauncher
run_monitoring:
  enabled: true
  poll_interval_seconds: {MONITOR_INTERVAL_S}
  start_timeout_seconds: 180
run_retries:
  enabled: true
  max_retries: {MAX_RUN_RETRIES}
  retry_on_asset_or_op_failure: false
"""

_SQLITE_HEADER = f"{_HEADER} Storage: SQLite here.\n"
_POSTGRES_HEADER = (
    f"{_HEADER} Storage: PostgreSQL at\n"
    "# $DAGSTER_POSTGRES_URL (credentials stay in the environment).\n"
)
_POSTGRES_STORAGE = """\
storage:
  postgres:
    postgres_url:
      env: DAGSTER_POSTGRES_URL
"""

_CORES = os.cpu_count() or 1

#: The default: SQLite storage in the folder (Dagster's default), telemetry off, a run queue
#: that runs one run per core at a time, run monitoring and retries of runs whose process died.
SQLITE_DAGSTER_YAML = _SQLITE_HEADER + _queue(_CORES) + _FAULTS

#: PostgreSQL storage for runs, events and schedules. The URL (with any credentials) comes
#: from the environment, never from this file, e.g.
#: DAGSTER_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/dagster (name the
#: driver: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed).
POSTGRES_DAGSTER_YAML = _POSTGRES_HEADER + _queue(_CORES) + _FAULTS + _POSTGRES_STORAGE

#: What round 1 wrote (SQLite), byte for byte.
ROUND_1_SQLITE_DAGSTER_YAML = _SQLITE_HEADER + _ROUND_1_COMMON

#: What earlier versions wrote, byte for byte: such a file is brought up to date (the old one
#: kept beside it), anything else is the user's and left alone. Round 1 had no fault
#: handling; later files ran two runs at once whatever the cores.
_EARLIER = {
    earlier: current
    for earlier, current in [
        (ROUND_1_SQLITE_DAGSTER_YAML, SQLITE_DAGSTER_YAML),
        (_POSTGRES_HEADER + _ROUND_1_COMMON + _POSTGRES_STORAGE, POSTGRES_DAGSTER_YAML),
        (_SQLITE_HEADER + _ROUND_1_COMMON + _FAULTS, SQLITE_DAGSTER_YAML),
        (_POSTGRES_HEADER + _ROUND_1_COMMON + _FAULTS + _POSTGRES_STORAGE, POSTGRES_DAGSTER_YAML),
    ]
    if earlier != current
}


class HomeConflict(Exception):
    """DAGSTER_HOME already has a dagster.yaml other than the one asked for."""


def storage_kind(text: str) -> str:
    """``"postgres"`` or ``"sqlite"``: where a dagster.yaml keeps runs and events."""
    import yaml

    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return "unreadable"
    if not isinstance(config, dict):
        return "unreadable"
    storages = [config.get(key) for key in ("storage", "run_storage", "event_log_storage")]
    return "postgres" if "postgres" in repr(storages).lower() else "sqlite"


def init_home(path: Path, *, postgres: bool = False, force: bool = False) -> str:
    """``sc-assets init-home``: make ``path`` a home and say what it holds, in one line.

    A new home gets the default dagster.yaml (PostgreSQL's with ``postgres``). An existing one
    is kept (and brought up to date as :func:`ensure_dagster_home` does) unless it asks for
    another storage than ``postgres`` does: then :class:`HomeConflict` is raised, unless
    ``force``, which replaces it, keeping the old file as ``dagster.yaml.before-<n>``. Runs
    already stored in the old storage stay there; they are not copied.
    """
    config = path / "dagster.yaml"
    wanted = "postgres" if postgres else "sqlite"
    if config.exists():
        kind = storage_kind(config.read_text())
        if force:
            backup = _free_name(config, ".before-")
            config.rename(backup)
            _write(config, POSTGRES_DAGSTER_YAML if postgres else SQLITE_DAGSTER_YAML)
            return f"{config}: replaced ({kind} -> {wanted} storage), the old file is {backup.name}"
        if postgres and kind != "postgres":
            raise HomeConflict(
                f"{config} already exists ({kind} storage): add --force to replace it with "
                "PostgreSQL's (it is kept as dagster.yaml.before-<n>; its runs are not copied)"
            )
        ensure_dagster_home(path)
        return f"{config}: kept ({kind} storage)"
    ensure_dagster_home(path, postgres=postgres)
    return f"{config}: written ({wanted} storage)"


def ensure_dagster_home(path: Path, *, postgres: bool = False) -> Path:
    """Create ``path`` with a default ``dagster.yaml`` unless it already has one.

    A ``dagster.yaml`` that an earlier version of sc-assets wrote, unchanged, is replaced by
    the current one (run monitoring and retries on), the old one kept as
    ``dagster.yaml.before-<n>``; a file anyone edited is left as it is.
    """
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        _write(config, POSTGRES_DAGSTER_YAML if postgres else SQLITE_DAGSTER_YAML)
    elif (current := _EARLIER.get(config.read_text())) is not None:
        config.rename(_free_name(config, ".before-"))
        _write(config, current)
    return path


def _free_name(config: Path, infix: str) -> Path:
    n = 1
    while (candidate := config.with_name(f"{config.name}{infix}{n}")).exists():
        n += 1
    return candidate


def _write(config: Path, text: str) -> None:
    tmp = config.with_name(f".{config.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, config)
