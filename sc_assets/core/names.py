"""GEO per-sample file names <-> sample metadata and partition keys.

The series GSE174609 ships one file per sample, e.g. ``GSM5320459_Ctrl1_count_matrix.csv.gz``:
``GSM5320459`` is the GEO sample accession, ``Ctrl`` the condition and ``1`` the donor. The
partition key of a sample is the file name without the ``_count_matrix.csv.gz`` suffix.

Names are matched strictly (ASCII letters and digits only, no path separators, no dots other
than the suffix), so a partition key can never address anything outside its storage folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from sc_assets.core.errors import SampleNameError

FILE_SUFFIX = "_count_matrix.csv.gz"

_KEY = r"(?P<sample_id>GSM[0-9]{1,12})_(?P<condition>[A-Za-z]{1,32})(?P<donor>[1-9][0-9]{0,5})"
_KEY_RE = re.compile(rf"\A{_KEY}\Z")
_FILE_RE = re.compile(rf"\A{_KEY}{re.escape(FILE_SUFFIX)}\Z")

EXPECTED_FILE_NAME = "GSM<digits>_<Condition><donor>_count_matrix.csv.gz"


@dataclass(frozen=True)
class SampleName:
    """Metadata parsed from a GEO per-sample file name."""

    sample_id: str
    """GEO sample accession, e.g. ``"GSM5320459"``."""
    condition: str
    """Condition, e.g. ``"Ctrl"``, ``"Pre"`` or ``"Post"``."""
    donor: int
    """Donor number, e.g. ``1``."""

    @property
    def sample(self) -> str:
        """Readable sample label, e.g. ``"Ctrl1"`` (used as the obs-name prefix when merging)."""
        return f"{self.condition}{self.donor}"

    @property
    def partition_key(self) -> str:
        """Dagster partition key, e.g. ``"GSM5320459_Ctrl1"``."""
        return f"{self.sample_id}_{self.sample}"

    @property
    def file_name(self) -> str:
        """File name in the input folder, e.g. ``"GSM5320459_Ctrl1_count_matrix.csv.gz"``."""
        return f"{self.partition_key}{FILE_SUFFIX}"


def parse_sample_name(path_or_name: str | os.PathLike[str]) -> SampleName:
    """Parse a per-sample count-matrix file name (a bare name or a path).

    Parameters
    ----------
    path_or_name
        ``GSM5320459_Ctrl1_count_matrix.csv.gz`` or a path ending in such a name.

    Returns
    -------
    The sample's accession, condition and donor.

    Raises
    ------
    SampleNameError
        If the name does not match ``GSM<digits>_<Condition><donor>_count_matrix.csv.gz``.
    """
    name = os.path.basename(os.fspath(path_or_name))
    match = _FILE_RE.match(name)
    if match is None:
        raise SampleNameError(
            f"{name!r} is not a per-sample count matrix name: expected {EXPECTED_FILE_NAME}, "
            f"e.g. GSM5320459_Ctrl1{FILE_SUFFIX}"
        )
    return _from_match(match)


def parse_partition_key(key: str) -> SampleName:
    """Parse a partition key such as ``GSM5320459_Ctrl1``.

    Raises
    ------
    SampleNameError
        If the key is not of the form ``GSM<digits>_<Condition><donor>``.
    """
    match = _KEY_RE.match(key)
    if match is None:
        raise SampleNameError(
            f"{key!r} is not a sample partition key: expected GSM<digits>_<Condition><donor>, "
            "e.g. GSM5320459_Ctrl1"
        )
    return _from_match(match)


def is_sample_file_name(name: str) -> bool:
    """Whether ``name`` is a valid per-sample count-matrix file name."""
    return _FILE_RE.match(name) is not None


def _from_match(match: re.Match[str]) -> SampleName:
    return SampleName(
        sample_id=match["sample_id"],
        condition=match["condition"],
        donor=int(match["donor"]),
    )
