"""``sc_assets.ScRnaSeqStudy``: a study declared in YAML (a Dagster component, for ``dg``).

One ``defs/<study>/defs.yaml`` per study::

    type: sc_assets.ScRnaSeqStudy
    attributes:
      name: pbmc_cohort
      samplesheet: data/pbmc_cohort/samplesheet.csv   # or data_dir: a folder, scanned
      thresholds: {min_cells: 200}

builds that study's definitions (:func:`sc_assets.definitions.build_definitions` with the
study's names, :class:`sc_assets.study.StudyKeys`): its partitions, four assets under its
key prefix and group, checks, jobs, sensors and schedule. Relative paths resolve against the
project root; files are stored under ``<SC_ASSETS_STORAGE_DIR>/<storage_prefix>/``. What the
attributes cannot say by their types (a samplesheet that does not exist) is refused when the
definitions are built, naming the ``defs.yaml`` and the attribute.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field, model_validator
from upath import UPath

from sc_assets.core.remote import is_url
from sc_assets.core.validation import Thresholds
from sc_assets.settings import Settings, SettingsError, check_cron, check_timezone
from sc_assets.study import DEFAULT_STUDY_NAME, STUDY_NAME, StudyKeys

#: Names a study's storage prefix may not take: the default study's files at the root.
_DEFAULT_STUDY_FILES = frozenset(
    {"sample_adata", "merged_adata.h5ad", "reference_genes.txt", "merged_adata", "reports"}
)


class StudyThresholds(dg.Model, dg.Resolvable):
    """The study's check thresholds (the defaults are the default study's)."""

    min_cells: int = Field(Thresholds.min_cells, ge=0)
    max_cells: int = Field(Thresholds.max_cells, ge=1)
    min_zero_fraction: float = Field(Thresholds.min_zero_fraction, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> StudyThresholds:
        if self.max_cells < self.min_cells:
            raise ValueError(f"max_cells ({self.max_cells}) is below min_cells ({self.min_cells})")
        return self


class StudyScaffolder(dg.Scaffolder):
    """``dg scaffold defs sc_assets.ScRnaSeqStudy <name>``: a defs.yaml for a study named
    after its folder, reading ``data/<name>/`` (a samplesheet.csv there is used, if any)."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = request.target_path.name
        dg.scaffold_component(
            request,
            {
                "name": name,
                "data_dir": f"data/{name}",
                "thresholds": {"min_cells": 100, "max_cells": 100_000, "min_zero_fraction": 0.9},
            },
        )


@dg.scaffold_with(StudyScaffolder)
class ScRnaSeqStudy(dg.Component, dg.Model, dg.Resolvable):
    """A single-cell RNA-seq study: its samples (a samplesheet or a data folder) ingested as
    partitions of ``<name>/sample_adata``, checked, and merged into ``<name>/merged_adata``."""

    name: str = Field(
        pattern="^" + STUDY_NAME.pattern.removesuffix(r"\Z") + "$",
        description="Key prefix, group and partitions name ([a-z][a-z0-9_]{0,40}).",
    )
    samplesheet: str | None = Field(
        None, description="The study's samplesheet (nf-core style CSV), relative to the project."
    )
    data_dir: str | None = Field(
        None, description="Or: a folder scanned for samples, relative to the project root."
    )
    storage_prefix: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,63})*$",
        description="Folder under SC_ASSETS_STORAGE_DIR for this study's files (default: name).",
    )
    reference_genes: str | None = Field(
        None, description="A features file; null: the first sample's genes are pinned."
    )
    thresholds: StudyThresholds = Field(default_factory=StudyThresholds)
    sensor_interval_seconds: int = Field(30, ge=1)
    reingest_cron: str = "0 2 * * *"
    timezone: str | None = Field(None, description="Of reingest_cron (default: the machine's).")
    h5ad_compression: Literal["none", "lzf", "gzip"] = "none"

    @property
    def keys(self) -> StudyKeys:
        return StudyKeys(self.name, prefixed=True)

    def settings(self, project_root: Path, base: Settings, where: Path) -> Settings:
        """This study's settings: its attributes over ``base`` (the environment's).

        Raises a ``ValueError`` naming ``where`` (its defs.yaml) and the attribute for what the
        types cannot check: a samplesheet or features file that does not exist, a cron string
        or time zone that cannot be used.
        """

        def path(value: str | None) -> Path | UPath | None:
            if value is None:
                return None
            return UPath(value) if is_url(value) else (project_root / value).absolute()

        if self.name == DEFAULT_STUDY_NAME:
            raise StudyError(where, "name", f"{self.name!r} is the environment-configured study's")
        if (self.samplesheet is None) == (self.data_dir is None):
            raise StudyError(where, "samplesheet/data_dir", "give exactly one of the two")
        if self.storage_prefix in _DEFAULT_STUDY_FILES:
            raise StudyError(
                where, "storage_prefix", f"{self.storage_prefix!r} holds the default study's files"
            )

        samplesheet, data_dir = path(self.samplesheet), path(self.data_dir)
        reference = path(self.reference_genes)
        for attribute, file in (("samplesheet", samplesheet), ("reference_genes", reference)):
            if file is not None and not file.is_file():
                raise StudyError(where, attribute, f"{file} does not exist")
        try:
            check_cron("reingest_cron", self.reingest_cron)
            timezone = check_timezone("timezone", self.timezone or base.timezone)
        except SettingsError as error:
            raise StudyError(where, error.variable, str(error)) from None
        prefix = self.storage_prefix or self.name
        storage = f"{base.storage_dir.rstrip('/')}/{prefix}"
        return dataclasses.replace(
            base,
            data_dir=data_dir if data_dir is not None else samplesheet.parent,
            samplesheet=samplesheet,
            storage_dir=storage,
            reference_genes=reference,
            h5ad_compression=self.h5ad_compression,
            thresholds=Thresholds(**self.thresholds.model_dump()),
            sensor_interval_seconds=self.sensor_interval_seconds,
            reingest_cron=self.reingest_cron,
            timezone=timezone,
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from sc_assets.location import build_definitions

        where = context.path / "defs.yaml"
        settings = self.settings(context.project_root, Settings.from_env(), where)
        return build_definitions(settings, self.keys)


class StudyError(ValueError):
    """A study's defs.yaml says something that cannot be used; names the file and attribute."""

    def __init__(self, where: Path, attribute: str, problem: str) -> None:
        super().__init__(f"{where}: {attribute}: {problem}")
