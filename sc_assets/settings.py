"""The platform's configuration: one place, read from environment variables.

Every setting has a default that works from the project folder (the README lists them). The
Dagster definitions, the CLI and the tests all build their resources from :class:`Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from sc_assets.core.validation import Thresholds

COMPRESSIONS = ("none", "lzf", "gzip")


@dataclass(frozen=True)
class Settings:
    """Platform settings; :meth:`from_env` documents the variable behind each field."""

    data_dir: Path
    samplesheet: Path | None
    storage_dir: str
    dagster_home: Path
    reference_genes: Path | None
    h5ad_compression: str
    thresholds: Thresholds
    sensor_interval_seconds: int
    reingest_cron: str
    timezone: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: ``os.environ``).

        Relative paths are resolved against the current directory (the project folder).
        ``SC_ASSETS_STORAGE_DIR`` may also be a URL such as ``s3://bucket/prefix`` (any
        universal-pathlib protocol); the out-of-core merge needs a local folder.
        """
        env = os.environ if environ is None else environ
        defaults = Thresholds()

        def get(name: str, default: str) -> str:
            value = env.get(name, "").strip()
            return value or default

        compression = get("SC_ASSETS_H5AD_COMPRESSION", "none").lower()
        if compression not in COMPRESSIONS:
            raise ValueError(
                f"SC_ASSETS_H5AD_COMPRESSION={compression!r}: expected one of {COMPRESSIONS}"
            )
        storage = get("SC_ASSETS_STORAGE_DIR", "storage")
        reference = get("SC_ASSETS_REFERENCE_GENES", "")
        samplesheet = get("SC_ASSETS_SAMPLESHEET", "")
        return cls(
            data_dir=Path(get("SC_ASSETS_DATA_DIR", "data")).absolute(),
            samplesheet=Path(samplesheet).absolute() if samplesheet else None,
            storage_dir=storage if "://" in storage else str(Path(storage).absolute()),
            dagster_home=Path(get("DAGSTER_HOME", ".dagster_home")).absolute(),
            reference_genes=Path(reference).absolute() if reference else None,
            h5ad_compression=compression,
            thresholds=Thresholds(
                min_cells=int(get("SC_ASSETS_MIN_CELLS", str(defaults.min_cells))),
                max_cells=int(get("SC_ASSETS_MAX_CELLS", str(defaults.max_cells))),
                min_zero_fraction=float(
                    get("SC_ASSETS_MIN_ZERO_FRACTION", str(defaults.min_zero_fraction))
                ),
            ),
            sensor_interval_seconds=int(get("SC_ASSETS_SENSOR_INTERVAL", "30")),
            reingest_cron=get("SC_ASSETS_REINGEST_CRON", "0 2 * * *"),
            timezone=get("SC_ASSETS_TIMEZONE", _local_timezone()),
        )

    def describe(self) -> dict[str, str]:
        """The settings as strings, for logs and the CLI."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


def _local_timezone() -> str:
    """The machine's IANA time zone name (``TZ``, then /etc/localtime), else UTC."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        return tz
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        return "UTC"
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else "UTC"
