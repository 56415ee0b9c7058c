"""Placeholder: 10x_h5 reader (being written)."""

from __future__ import annotations

from pathlib import Path

from sc_assets.core.readers._source import ReadOptions, Source

LAYOUTS = ("10x_h5",)


def detect(path: Path, head: bytes) -> Source | None:
    return None


def read(source: Source, options: ReadOptions):
    raise NotImplementedError


def read_gene_names(source: Source, options: ReadOptions) -> list[str]:
    raise NotImplementedError
