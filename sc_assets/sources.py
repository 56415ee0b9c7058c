"""Observations of the raw input files: content hash as data version, read back per sample."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dagster import AssetKey, AssetObservation, AssetRecordsFilter, DagsterInstance
from dagster._core.definitions.data_version import DATA_VERSION_TAG  # not re-exported

from sc_assets.core.inbox import SampleFile

RAW_COUNT_MATRIX = AssetKey("raw_count_matrix")


def source_observation(file: SampleFile, sha256: str) -> AssetObservation:
    """An observation of ``raw_count_matrix[<key>]`` whose data version is the content hash."""
    return AssetObservation(
        asset_key=RAW_COUNT_MATRIX,
        partition=file.partition_key,
        tags={DATA_VERSION_TAG: sha256},
        metadata={"path": str(file.path), "bytes": file.size, "signature": file.signature},
    )


@dataclass(frozen=True)
class ObservedSource:
    """The latest observation of one sample's source file."""

    sha256: str
    signature: str
    """``<size>-<mtime_ns>`` of the file when it was hashed."""


def observed_sources(instance: DagsterInstance, keys: Iterable[str]) -> dict[str, ObservedSource]:
    """The latest observed content hash of each sample's source file (absent: never seen)."""
    observed = {}
    for key in keys:
        records = instance.fetch_observations(
            AssetRecordsFilter(asset_key=RAW_COUNT_MATRIX, asset_partitions=[key]), limit=1
        ).records
        observation = records[0].asset_observation if records else None
        if observation is not None and observation.tags.get(DATA_VERSION_TAG):
            signature = observation.metadata.get("signature")
            observed[key] = ObservedSource(
                sha256=observation.tags[DATA_VERSION_TAG],
                signature=str(signature.value) if signature is not None else "",
            )
    return observed
