"""What the platform knows about one sample before reading it: where, how, and its metadata.

A :class:`SampleSpec` comes from a samplesheet row (:mod:`sc_assets.core.samplesheet`) or from
a file or folder found in the data folder (:mod:`sc_assets.core.inbox`); readers, the assets
and the merge only ever see specs, never where they came from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sc_assets.core.names import SampleName, parse_partition_key, parse_sample_name

#: A sample name, which is also its partition key and its file name in storage.
SAMPLE_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
SAMPLE_NAME_RE = re.compile(rf"\A{SAMPLE_NAME_PATTERN}\Z")

#: The obs column naming each cell's sample (its label), in every sample and in the merge.
SAMPLE_COLUMN = "sample"

ORIENTATIONS = ("genes_x_cells", "cells_x_genes")


@dataclass(frozen=True)
class SampleSpec:
    """One sample: its name, its input, how to read it and the metadata of its cells.

    Attributes
    ----------
    sample
        The sample name: partition key, storage file name (``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``).
    path
        The input: a file, or a folder (MTX, STARsolo); absolute.
    format
        ``"auto"`` (detect by content) or a layout name (see ``sc_assets.core.readers``).
    orientation
        ``"genes_x_cells"`` (GEO's CSVs) or ``"cells_x_genes"``; for text matrices only.
    counts_layer
        For ``.h5ad`` inputs: the layer holding the raw counts (``None``: look for them).
    genome
        For inputs with several genomes (Cell Ranger 1-2): the one to read.
    metadata
        obs columns given to every cell of the sample, in order: ``(column, value)``; a value
        of None is missing (an empty samplesheet cell).
    categorical
        Which of the ``metadata`` columns are categorical (the others keep their Python type).
    line
        The samplesheet line this came from, or ``None`` (a scanned file).
    """

    sample: str
    path: Path
    format: str = "auto"
    orientation: str = "genes_x_cells"
    counts_layer: str | None = None
    genome: str | None = None
    metadata: tuple[tuple[str, str | int | None], ...] = ()
    categorical: frozenset[str] = field(default_factory=frozenset)
    line: int | None = None

    @property
    def label(self) -> str:
        """The sample's ``obs["sample"]`` value and its cell-name prefix in the merge.

        ``Ctrl1`` for a GEO-named sample ``GSM5320459_Ctrl1`` (as in round 1), otherwise the
        sample name itself.
        """
        return sample_label(self.sample)

    def obs_columns(self, n_obs: int) -> dict[str, np.ndarray | pd.Categorical]:
        """The metadata columns of an obs with ``n_obs`` cells, then ``sample`` (the label)."""
        columns: dict[str, np.ndarray | pd.Categorical] = {}
        for name, value in self.metadata:
            if name in self.categorical:
                columns[name] = pd.Categorical([value] * n_obs)
            elif isinstance(value, int):
                columns[name] = np.full(n_obs, value, dtype=np.int64)
            else:
                columns[name] = np.full(n_obs, value, dtype=object)
        columns[SAMPLE_COLUMN] = np.full(n_obs, self.label, dtype=object)
        return columns

    def describe(self) -> dict[str, str]:
        """The spec as strings, e.g. for run tags and metadata."""
        described = {"sample": self.sample, "path": str(self.path), "format": self.format}
        if self.orientation != "genes_x_cells":
            described["orientation"] = self.orientation
        if self.counts_layer:
            described["counts_layer"] = self.counts_layer
        if self.genome:
            described["genome"] = self.genome
        described.update({name: str(value) for name, value in self.metadata if value is not None})
        return described


def sample_label(sample: str) -> str:
    """``Ctrl1`` for GEO-style names (``GSM5320459_Ctrl1``), the name itself otherwise."""
    try:
        return parse_partition_key(sample).sample
    except ValueError:
        return sample


def geo_metadata(name: SampleName) -> tuple[tuple[str, str | int], ...]:
    """The obs metadata a GEO file name carries: accession, condition and donor."""
    return (("sample_id", name.sample_id), ("condition", name.condition), ("donor", name.donor))


def geo_spec(path: str | os.PathLike[str]) -> SampleSpec:
    """The spec of a GEO-named CSV (``GSM<digits>_<Condition><donor>_count_matrix.csv.gz``).

    Its metadata comes from its name as in round 1: ``sample_id``, ``condition``
    (categorical), ``donor`` (int), then ``sample`` (``Ctrl1``).
    """
    name = parse_sample_name(path)
    return SampleSpec(
        sample=name.partition_key,
        path=Path(path).absolute(),
        format="csv",
        metadata=geo_metadata(name),
        categorical=frozenset({"condition"}),
    )
