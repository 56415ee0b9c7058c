"""Batches of samples: which partitions one run materializes, and the tags that say so.

A run of several partitions is a partition range (Dagster's ``asset_partition_range_start``
and ``_end`` tags): the keys between two keys in the partitions' order. A batch therefore
holds neighbours in that order, and never a partition that is not to be run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagster._core.storage.tags import (  # not re-exported by dagster 1.13
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

#: At most this many samples per run (a full-size sample takes seconds, a small one 0.1 s).
MAX_BATCH = 50
#: At least this many batches per worker (of ``sc-assets ingest``, whose workers are warm: a
#: batch costs little more than its samples), so that workers finish at about the same time.
BATCHES_PER_WORKER = 4


def plan_batches(
    partition_order: Sequence[str],
    sizes: Mapping[str, int],
    workers: int,
    *,
    batches_per_worker: int = BATCHES_PER_WORKER,
) -> list[tuple[str, ...]]:
    """The samples ``sizes`` names (key -> bytes), in batches, largest first.

    Batches hold about ``len(sizes) / (workers * batches_per_worker)`` samples (at most
    :data:`MAX_BATCH`) and are returned by total bytes, largest first: the runs left for the
    end are the short ones (longest-processing-time-first scheduling).
    """
    wanted = [key for key in partition_order if key in sizes]
    per_batch = max(1, min(MAX_BATCH, -(-len(wanted) // (workers * batches_per_worker))))
    batches: list[tuple[str, ...]] = []
    current: list[str] = []
    position = {key: i for i, key in enumerate(partition_order)}
    for key in wanted:
        neighbour = current and position[key] == position[current[-1]] + 1
        if current and (not neighbour or len(current) == per_batch):
            batches.append(tuple(current))
            current = []
        current.append(key)
    if current:
        batches.append(tuple(current))
    return sorted(batches, key=lambda batch: sum(sizes[key] for key in batch), reverse=True)


def batch_tags(batch: Sequence[str]) -> dict[str, str]:
    """The tags of a run of one partition, or of a range of them."""
    if len(batch) == 1:
        return {PARTITION_NAME_TAG: batch[0]}
    return {ASSET_PARTITION_RANGE_START_TAG: batch[0], ASSET_PARTITION_RANGE_END_TAG: batch[-1]}


def batch_keys(partition_order: Sequence[str], tags: Mapping[str, str]) -> list[str]:
    """The partitions a run with ``tags`` materializes (one, a range, or none)."""
    if PARTITION_NAME_TAG in tags:
        return [tags[PARTITION_NAME_TAG]]
    start, end = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if start is None or end is None or start not in partition_order or end not in partition_order:
        return []
    return list(partition_order[partition_order.index(start) : partition_order.index(end) + 1])
