"""The studies of a code location and their Definitions, side by side.

The **default study** is configured from the ``SC_ASSETS_*`` environment variables and keeps the
unprefixed names of earlier versions (``sample_adata``, partitions ``samples``...). Every
**declared study** is a ``defs/<study>/defs.yaml`` of type ``sc_assets.ScRnaSeqStudy`` in the
project's defs folder (``sc_assets/defs`` here; ``[tool.dg]`` in pyproject.toml says where),
with names prefixed by the study's (:mod:`sc_assets.study`). ``sc_assets.definitions`` is
this project's code location; another dg project of studies calls
:func:`project_definitions` with its own root (importing this module has no side effect).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dagster import BetaWarning, Definitions, PreviewWarning, in_process_executor

from sc_assets.assets import build_assets
from sc_assets.automation import build_merge_automation_sensor
from sc_assets.io_managers import GeneListIOManagerFactory, H5adIOManagerFactory
from sc_assets.jobs import build_jobs
from sc_assets.resources import CheckThresholds, SampleInbox
from sc_assets.schedules import build_nightly_reingest
from sc_assets.sensors import build_new_samples_sensor
from sc_assets.settings import Settings
from sc_assets.study import DEFAULT_STUDY, StudyKeys

#: This project's root (where pyproject.toml and its [tool.dg] are).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def build_definitions(settings: Settings, study: StudyKeys = DEFAULT_STUDY) -> Definitions:
    """One study's definitions, wired to ``settings`` (the default study: the environment's)."""
    thresholds = settings.thresholds
    jobs = build_jobs(study)
    return Definitions(
        assets=build_assets(study),
        jobs=jobs.all(),
        sensors=[
            build_new_samples_sensor(settings.sensor_interval_seconds, settings.storage_dir, study),
            build_merge_automation_sensor(settings.sensor_interval_seconds, study),
        ],
        schedules=[build_nightly_reingest(settings.reingest_cron, settings.timezone, study)],
        resources={
            study.named("inbox"): SampleInbox(
                data_dir=str(settings.data_dir),
                samplesheet=str(settings.samplesheet) if settings.samplesheet else None,
                reference_genes_file=(
                    str(settings.reference_genes) if settings.reference_genes else None
                ),
            ),
            study.named("check_thresholds"): CheckThresholds(
                min_cells=thresholds.min_cells,
                max_cells=thresholds.max_cells,
                min_zero_fraction=thresholds.min_zero_fraction,
            ),
            study.named("h5ad_io_manager"): H5adIOManagerFactory(
                base_dir=settings.storage_dir, compression=settings.h5ad_compression
            ),
            study.named("gene_list_io_manager"): GeneListIOManagerFactory(
                base_dir=settings.storage_dir
            ),
        },
    )


@dataclass(frozen=True)
class StudyEntry:
    """A study of the code location: its names, settings and where it was declared."""

    keys: StudyKeys
    settings: Settings
    declared_in: Path | None = None
    """Its defs.yaml (None: the default study, from the environment)."""


def declared_studies(project_root: Path = PROJECT_ROOT) -> Mapping[str, StudyEntry]:
    """The default study and every study declared in the project's defs folder, by name.

    Raises ``ValueError`` naming the defs.yaml files when two studies share a name or a
    storage prefix, or a study's attributes cannot be used (see :mod:`sc_assets.component`).
    """
    return _studies(_component_tree(project_root), project_root)


def _studies(tree, project_root: Path) -> dict[str, StudyEntry]:
    from sc_assets.component import ScRnaSeqStudy, StudyError

    base = Settings.from_env()
    studies = {DEFAULT_STUDY.name: StudyEntry(DEFAULT_STUDY, base)}
    if tree is None:
        return studies
    storage: dict[str, Path] = {}
    names: dict[str, Path] = {}
    for loc, decl in tree._component_decl_tree().items():  # noqa: SLF001 (no public listing)
        if not isinstance(decl.component_type, type) or not issubclass(
            decl.component_type, ScRnaSeqStudy
        ):
            continue
        where = Path(loc.file_path) / "defs.yaml"
        with _quiet():
            component = tree.load_component(loc)
        if component.name in names:
            raise StudyError(
                where, "name", f"{component.name!r} is also the name in {names[component.name]}"
            )
        settings = component.settings(project_root, base, where)
        if settings.storage_dir in storage:
            raise StudyError(
                where,
                "storage_prefix",
                f"{settings.storage_dir} is also the storage of {storage[settings.storage_dir]}",
            )
        names[component.name] = storage[settings.storage_dir] = where
        studies[component.name] = StudyEntry(component.keys, settings, where)
    return studies


def project_definitions(project_root: Path = PROJECT_ROOT) -> Definitions:
    """The code location: the default study's definitions and the defs folder's (the
    declared studies', and anything else a user put there)."""
    tree = _component_tree(project_root)
    studies = _studies(tree, project_root)  # validates the studies together first
    default = build_definitions(studies[DEFAULT_STUDY.name].settings)
    # Runs that no job names (the automation sensor's) also execute in the run's process,
    # as the jobs do: on a Celery worker, a run is one task in one process.
    in_process = Definitions(executor=in_process_executor)
    if tree is None:
        return Definitions.merge(default, in_process)
    with _quiet():
        return Definitions.merge(default, tree.build_defs(), in_process)


@contextlib.contextmanager
def _quiet():
    """Dagster's components machinery warns that it is in preview/beta at every load: said
    once here (README), not to every user of the CLI."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        warnings.simplefilter("ignore", BetaWarning)
        yield


def _component_tree(project_root: Path):
    """The project's component tree (its defs folder), or None if it has none."""
    from dagster.components.core.component_tree import ComponentTree
    from dagster_shared.utils.config import discover_config_file

    config = discover_config_file(project_root)
    if config is None or config.parent != project_root:
        return None
    if str(project_root) not in sys.path:
        sys.path.insert(0, str(project_root))  # a project of studies that is not installed
    return ComponentTree.for_project(project_root)


def project_root_of(folder: Path) -> Path:
    """The dg project a command run in ``folder`` serves: the nearest enclosing folder whose
    pyproject.toml (or dg.toml) has a dg project, else this one."""
    from dagster_shared.utils.config import discover_config_file

    config = discover_config_file(folder.absolute())
    return config.parent if config is not None else PROJECT_ROOT
