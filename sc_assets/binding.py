"""Which study and storage folder a Dagster instance belongs to, read from what it stored.

An instance's partitions, pinned reference genes and materializations describe one study (its
data folder or samplesheet) and the files of one storage folder. Pointing the same instance at
another storage folder would look for the pin where it never was; pointing it at another data
folder would report every known sample as removed. Both are refused before anything runs.

The instance itself is the record: ``reference_genes``'s last materialization holds the path it
was written to (``path``) and the study it was pinned for (``study``; pins made before this was
recorded hold only the path, so only the storage folder is checked for them).
"""

from __future__ import annotations

from dagster import DagsterInstance
from upath import UPath

from sc_assets.study import StudyKeys

REFERENCE_FILE = "reference_genes.txt"
#: Output metadata key of ``reference_genes`` naming the study it was pinned for.
STUDY_METADATA_KEY = "study"


def study_name(data_dir: str, samplesheet: str | None) -> str:
    """How the study of a data folder or an explicit samplesheet is named in the record."""
    return f"samplesheet {samplesheet}" if samplesheet else f"data folder {data_dir}"


def binding_conflict(
    instance: DagsterInstance, keys: StudyKeys, *, storage_dir: str, study: str, home: str
) -> str | None:
    """One line saying why this instance's study ``keys`` cannot serve ``storage_dir`` and
    ``study`` (see :func:`study_name`), or None."""
    event = instance.get_latest_materialization_event(keys.reference_genes)
    if event is None or event.asset_materialization is None:
        return None
    metadata = event.asset_materialization.metadata
    pinned = metadata.get("path")
    if pinned is not None:
        wanted = str(UPath(storage_dir) / REFERENCE_FILE)
        stored = str(pinned.value)
        if stored != wanted:
            folder = stored.removesuffix(REFERENCE_FILE).rstrip("/")
            return (
                f"DAGSTER_HOME={home} keeps this study's files in {folder}, not in "
                f"{storage_dir}: run with --storage-dir {folder} (SC_ASSETS_STORAGE_DIR), or give "
                "the new folder an instance of its own (another DAGSTER_HOME)"
            )
    recorded = metadata.get(STUDY_METADATA_KEY)
    if recorded is not None and str(recorded.value) != study:
        return (
            f"DAGSTER_HOME={home} holds the study of the {recorded.value}, not of the {study}: "
            "point --data-dir/--samplesheet (SC_ASSETS_DATA_DIR/SC_ASSETS_SAMPLESHEET) there, or "
            "give the new study an instance of its own (another DAGSTER_HOME)"
        )
    return None
