"""Observations of the raw inputs: their data version, recorded and read back per sample."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dagster import (
    AssetObservation,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    MetadataValue,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG  # not re-exported

from sc_assets.core.discovery import FileStat
from sc_assets.core.inbox import SampleInput, content_hash, data_version
from sc_assets.study import DEFAULT_STUDY, StudyKeys

#: The default study's sources (another study's: ``StudyKeys.raw_count_matrix``).
RAW_COUNT_MATRIX = DEFAULT_STUDY.raw_count_matrix


def source_observation(
    sample: SampleInput,
    version: str,
    file_hashes: Mapping[str, str],
    study: StudyKeys = DEFAULT_STUDY,
) -> AssetObservation:
    """An observation of ``raw_count_matrix[<key>]`` whose data version is ``version``.

    ``version`` and ``file_hashes`` come from :func:`sample_version`: the file's SHA-256 for
    a single file found in the data folder, else a hash of the files' hashes and the
    samplesheet row.
    """
    metadata: dict[str, object] = {
        "path": str(sample.path),
        "bytes": sample.size,
        "signature": sample.signature,
        "layout": sample.spec.format,
        "file_hashes": MetadataValue.json(dict(file_hashes)),
    }
    if sample.spec.line is not None:
        metadata["samplesheet_line"] = sample.spec.line
    return AssetObservation(
        asset_key=study.raw_count_matrix,
        partition=sample.partition_key,
        tags={DATA_VERSION_TAG: version},
        metadata=metadata,
    )


@dataclass(frozen=True)
class ObservedSource:
    """The latest observation of one sample's input."""

    sha256: str
    """The data version (see :func:`source_observation`)."""
    signature: str
    """The input's sizes and mtimes (and row digest) when it was hashed."""
    file_hashes: Mapping[str, str] = field(default_factory=dict)
    """:attr:`FileStat.identity` -> SHA-256 of each file then (empty for old observations)."""
    storage_id: int | None = None
    """The observation's event id (what a materialization's lineage points to)."""


def observed_sources(
    instance: DagsterInstance, keys: Iterable[str], study: StudyKeys = DEFAULT_STUDY
) -> dict[str, ObservedSource]:
    """The latest observed data version of each sample's input (absent: never seen).

    Two queries whatever the number of samples: the latest observation id per partition,
    then those observations.
    """
    keys = set(keys)
    if not keys:
        return {}
    latest = instance.get_latest_storage_id_by_partition(
        study.raw_count_matrix, DagsterEventType.ASSET_OBSERVATION, partitions=keys
    )
    if not latest:
        return {}
    records = instance.fetch_observations(
        AssetRecordsFilter(asset_key=study.raw_count_matrix, storage_ids=list(latest.values())),
        limit=len(latest),
    ).records
    observed = {}
    for record in records:
        observation = record.asset_observation
        if observation is None or not observation.tags.get(DATA_VERSION_TAG):
            continue
        signature = observation.metadata.get("signature")
        hashes = observation.metadata.get("file_hashes")
        observed[str(record.partition_key)] = ObservedSource(
            sha256=observation.tags[DATA_VERSION_TAG],
            signature=str(signature.value) if signature is not None else "",
            file_hashes=dict(hashes.value) if hashes is not None else {},
            storage_id=record.storage_id,
        )
    return observed


def sample_version(sample: SampleInput, previous: ObservedSource | None) -> tuple[str, dict]:
    """The data version of ``sample`` and the file hashes it was made of.

    A file whose path, size and times are those of the previous observation is not read
    again: an edited samplesheet row costs a hash of the row, not of the sample's files.
    """
    known = previous.file_hashes if previous is not None else {}
    hashes: dict[str, str] = {}

    def file_hash(stat: FileStat) -> str:
        hashes[stat.identity] = known.get(stat.identity) or content_hash(stat.path)
        return hashes[stat.identity]

    return data_version(sample, file_hash), hashes
