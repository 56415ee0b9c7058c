"""The persistent Dagster instance folder (``DAGSTER_HOME``) and its ``dagster.yaml``."""

from __future__ import annotations

from pathlib import Path

#: Written when DAGSTER_HOME has no dagster.yaml: SQLite storage in the folder (Dagster's
#: default), telemetry off, and a run queue that runs two runs at a time on a 2-core machine.
DEFAULT_DAGSTER_YAML = """\
# Written by sc-assets (sc_assets/dagster_home.py). Storage: SQLite in this folder.
# For PostgreSQL, see "PostgreSQL" in the README.
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 2
"""


def ensure_dagster_home(path: Path) -> Path:
    """Create ``path`` with a default ``dagster.yaml`` unless it already has one."""
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        config.write_text(DEFAULT_DAGSTER_YAML)
    return path
