"""unique_gene_names makes names unique exactly as anndata does."""

from __future__ import annotations

import warnings

import pandas as pd
from anndata.utils import make_index_unique
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_assets.core.genes import unique_gene_names

# Few distinct names, some of which look like the suffixed ones, so that collisions happen.
names = st.lists(st.sampled_from(["TBCE", "TBCE-1", "TBCE-2", "MATR3", "MT-CO1", "A-1-1", "A"]))


@settings(max_examples=300, deadline=None)
@given(symbols=names)
def test_same_as_anndata_make_index_unique(symbols: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata warns about suffix collisions
        expected = list(make_index_unique(pd.Index(symbols, dtype=object)))
    assert unique_gene_names(symbols) == expected


def test_repeats_get_numbered_suffixes_in_file_order() -> None:
    assert unique_gene_names(["TBCE", "A", "TBCE", "TBCE-1", "TBCE"]) == [
        "TBCE",
        "A",
        "TBCE-2",
        "TBCE-1",
        "TBCE-3",
    ]
