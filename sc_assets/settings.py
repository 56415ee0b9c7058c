"""The platform's configuration: one place, read from environment variables.

Every setting has a default that works from the project folder (the README lists them). The
Dagster definitions, the CLI and the tests all build their resources from :class:`Settings`.
"""

from __future__ import annotations

import math
import os
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from dagster._utils.schedules import is_valid_cron_string
from upath import UPath

from sc_assets.core.remote import location
from sc_assets.core.validation import Thresholds

COMPRESSIONS = ("none", "lzf", "gzip")


@dataclass(frozen=True)
class Settings:
    """Platform settings; :meth:`from_env` documents the variable behind each field."""

    data_dir: Path | UPath
    samplesheet: Path | UPath | None
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

        Every value is checked here, once: a value that cannot be used raises
        :class:`SettingsError`, one line naming the variable, the value and what is expected.
        Relative paths are resolved against the current directory (the project folder).
        ``SC_ASSETS_STORAGE_DIR``, ``SC_ASSETS_DATA_DIR`` and ``SC_ASSETS_SAMPLESHEET`` may
        also be URLs such as ``s3://bucket/prefix`` (any universal-pathlib protocol; S3 is
        configured by the standard ``AWS_*`` variables).
        """
        env = os.environ if environ is None else environ
        defaults = Thresholds()

        def get(name: str, default: str) -> str:
            value = env.get(name, "").strip()
            return value or default

        compression = get("SC_ASSETS_H5AD_COMPRESSION", "none").lower()
        if compression not in COMPRESSIONS:
            raise SettingsError(
                "SC_ASSETS_H5AD_COMPRESSION", compression, f"one of {', '.join(COMPRESSIONS)}"
            )
        storage = get("SC_ASSETS_STORAGE_DIR", "storage")
        reference = get("SC_ASSETS_REFERENCE_GENES", "")
        samplesheet = get("SC_ASSETS_SAMPLESHEET", "")
        thresholds = Thresholds(
            min_cells=_whole(env, "SC_ASSETS_MIN_CELLS", defaults.min_cells, minimum=0),
            max_cells=_whole(env, "SC_ASSETS_MAX_CELLS", defaults.max_cells, minimum=1),
            min_zero_fraction=_fraction(
                env, "SC_ASSETS_MIN_ZERO_FRACTION", defaults.min_zero_fraction
            ),
        )
        if thresholds.max_cells < thresholds.min_cells:
            raise SettingsError(
                "SC_ASSETS_MAX_CELLS",
                str(thresholds.max_cells),
                f"at least SC_ASSETS_MIN_CELLS ({thresholds.min_cells})",
            )
        reingest_cron = check_cron(
            "SC_ASSETS_REINGEST_CRON", get("SC_ASSETS_REINGEST_CRON", "0 2 * * *")
        )
        timezone = check_timezone(
            "SC_ASSETS_TIMEZONE", get("SC_ASSETS_TIMEZONE", _local_timezone())
        )
        return cls(
            data_dir=location(get("SC_ASSETS_DATA_DIR", "data")),
            samplesheet=location(samplesheet) if samplesheet else None,
            storage_dir=storage if "://" in storage else str(Path(storage).absolute()),
            dagster_home=Path(get("DAGSTER_HOME", ".dagster_home")).absolute(),
            reference_genes=Path(reference).absolute() if reference else None,
            h5ad_compression=compression,
            thresholds=thresholds,
            sensor_interval_seconds=_whole(env, "SC_ASSETS_SENSOR_INTERVAL", 30, minimum=1),
            reingest_cron=reingest_cron,
            timezone=timezone,
        )

    def describe(self) -> dict[str, str]:
        """The settings as strings, for logs and the CLI."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


class SettingsError(ValueError):
    """A setting's value cannot be used; the message is one line naming the variable."""

    def __init__(self, variable: str, value: str, expected: str) -> None:
        super().__init__(f"{variable}={value!r}: expected {expected}")
        self.variable = variable


def check_cron(name: str, value: str) -> str:
    """``value`` if it is a cron string Dagster accepts, else :class:`SettingsError`."""
    if not is_valid_cron_string(value):
        raise SettingsError(name, value, "a cron string such as '0 2 * * *'")
    return value


def check_timezone(name: str, value: str) -> str:
    """``value`` if it names an IANA time zone, else :class:`SettingsError`."""
    try:
        zoneinfo.ZoneInfo(value)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise SettingsError(name, value, "an IANA time zone such as Europe/Berlin or UTC") from None
    return value


def _whole(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise SettingsError(name, text, f"a whole number >= {minimum}, e.g. {default}")
    return value


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise SettingsError(name, text, f"a fraction between 0 and 1, e.g. {default}")
    return value


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
