"""Gene lists: unique symbols, reference lists from a features file or a sample."""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from anndata.utils import make_index_unique

from sc_assets.core._csv_parser import parse_count_matrix


def unique_gene_names(symbols: Sequence[str]) -> list[str]:
    """Make gene symbols unique the way scanpy and anndata do (``var_names_make_unique``).

    The second occurrence of a symbol becomes ``SYMBOL-1``, the third ``SYMBOL-2``, in file
    order, so the result is deterministic and the same for every sample with the same genes.
    """
    return list(make_index_unique(pd.Index(list(symbols), dtype=object)))


def read_features_file(path: str | os.PathLike[str]) -> list[str]:
    """Read a reference gene list, made unique with :func:`unique_gene_names`.

    Accepts a 10x ``features.tsv(.gz)``/``genes.tsv(.gz)`` (tab-separated: id, symbol[, type];
    the symbol column is used, as ``scanpy.read_10x_mtx`` does by default) or a plain text
    file with one symbol per line. Blank lines are ignored.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\r\n") for line in f]
    symbols = [line.split("\t")[1] if "\t" in line else line for line in lines if line.strip()]
    if not symbols:
        raise ValueError(f"{path}: the features file lists no genes")
    return unique_gene_names(symbols)


def read_sample_genes(path: str | os.PathLike[str]) -> list[str]:
    """Unique gene names of a per-sample count-matrix file, as ``read_count_matrix`` sets them."""
    return unique_gene_names(parse_count_matrix(path).genes)
