"""The persistent Dagster instance folder (``DAGSTER_HOME``) and its ``dagster.yaml``."""

from __future__ import annotations

from pathlib import Path

_COMMON = """\
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 2  # one run per core on a 2-core machine; more only queue for CPU
run_queue:
  dequeue_interval_seconds: 2  # start a queued run soon after a slot frees (default 5)
"""

#: The default: SQLite storage in the folder (Dagster's default), telemetry off, and a run
#: queue that runs two runs at a time.
SQLITE_DAGSTER_YAML = (
    "# Written by sc-assets (sc_assets/dagster_home.py). Storage: SQLite here.\n" + _COMMON
)

#: PostgreSQL storage for runs, events and schedules. The URL (with any credentials) comes
#: from the environment, never from this file, e.g.
#: DAGSTER_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/dagster (name the
#: driver: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed).
POSTGRES_DAGSTER_YAML = (
    "# Written by sc-assets (sc_assets/dagster_home.py). Storage: PostgreSQL at\n"
    "# $DAGSTER_POSTGRES_URL (credentials stay in the environment).\n"
    + _COMMON
    + """\
storage:
  postgres:
    postgres_url:
      env: DAGSTER_POSTGRES_URL
"""
)


def ensure_dagster_home(path: Path, *, postgres: bool = False) -> Path:
    """Create ``path`` with a default ``dagster.yaml`` unless it already has one."""
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        config.write_text(POSTGRES_DAGSTER_YAML if postgres else SQLITE_DAGSTER_YAML)
    return path
