"""The data-version tags of a materialization the asset records itself.

When an asset returns an ``Output``, Dagster tags its materialization with the asset's code
version, each input's data version and event, and a data version derived from them: that is
what the UI's "stale" markers compare. ``sample_adata`` records one materialization per
partition of a batch itself (see :mod:`sc_assets.assets.samples`), so it writes the same tags,
computed the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import AssetKey, DataVersion
from dagster._core.definitions.data_version import (  # not re-exported by dagster 1.13
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    NULL_DATA_VERSION,
    NULL_EVENT_POINTER,
    compute_logical_data_version,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)


def data_version_tags(
    code_version: str, inputs: Mapping[AssetKey, tuple[str | None, int | None]]
) -> dict[str, str]:
    """Tags for a materialization of code ``code_version`` made from ``inputs``.

    ``inputs``: input asset -> (its data version, the id of the event that carried it), each
    ``None`` when unknown.
    """
    versions = {
        key: DataVersion(version) if version else NULL_DATA_VERSION
        for key, (version, _) in inputs.items()
    }
    tags = {CODE_VERSION_TAG: code_version}
    for key, (_, storage_id) in inputs.items():
        tags[get_input_data_version_tag(key)] = versions[key].value
        tags[get_input_event_pointer_tag(key)] = (
            str(storage_id) if storage_id else NULL_EVENT_POINTER
        )
    tags[DATA_VERSION_TAG] = compute_logical_data_version(code_version, versions).value
    return tags
