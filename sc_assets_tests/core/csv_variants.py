"""Write small count matrices as text in the format variants the parser must accept.

Shared by the parser tests: :func:`write_count_csv` renders a numpy matrix with the chosen
variant (separator, orientation, compression, line endings, BOM, quoting, float spelling, gzip
members...), :func:`pandas_reference` reads a file the tutorial way, for comparison;
:func:`matrices`, :data:`layouts` and :data:`variants` are the hypothesis strategies that draw
them.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

GENES_X_CELLS, CELLS_X_GENES = "genes_x_cells", "cells_x_genes"


@dataclass(frozen=True)
class Variant:
    """How to spell a count matrix as text (the defaults are the plain GEO format)."""

    sep: str = ","
    compress: bool = True
    orientation: str = GENES_X_CELLS
    newline: str = "\n"
    bom: bool = False
    quote_header: bool = False
    quote_genes: bool = False
    quote_values: bool = False
    final_newline: bool = True
    float_values: bool = False  # non-zero counts as "3.0", "3.", "3.000" and "3e0" in turn
    trailing_blank_lines: int = 0
    members: int = 1  # gzip members (the text is split into this many and concatenated)
    corner: str = ""

    @property
    def suffix(self) -> str:
        """A file name suffix: ``.csv.gz``, ``.tsv``..."""
        return (".tsv" if self.sep == "\t" else ".csv") + (".gz" if self.compress else "")


#: The text layouts: separator x compression x orientation.
LAYOUTS = [
    Variant(sep=sep, compress=compress, orientation=orientation)
    for sep in (",", "\t")
    for compress in (True, False)
    for orientation in (GENES_X_CELLS, CELLS_X_GENES)
]


def layout_id(variant: Variant) -> str:
    """``csv-gz-genes_x_cells``...: a test id for a layout."""
    sep = "tsv" if variant.sep == "\t" else "csv"
    return f"{sep}-{'gz' if variant.compress else 'plain'}-{variant.orientation}"


def _quoted(field: str) -> str:
    return '"' + field.replace('"', '""') + '"'


_FLOAT_SPELLINGS = ("{}.0", "{}.", "{}.000", "{}e0")


def render(
    counts: np.ndarray, genes: list[str], barcodes: list[str], variant: Variant = Variant()
) -> bytes:
    """The text of a genes x cells integer matrix: genes as rows (or cells, if so oriented)."""
    v = variant
    if v.orientation == GENES_X_CELLS:
        columns, row_names, rows = barcodes, genes, counts
    else:
        columns, row_names, rows = genes, barcodes, counts.T
    header = [v.corner, *columns]
    if v.quote_header:
        header = [_quoted(f) for f in header]
    lines = [v.sep.join(header)]
    spellings = _FLOAT_SPELLINGS if v.float_values else ("{}",)
    k = 0
    for name, row in zip(row_names, rows, strict=True):
        fields = []
        for value in row.tolist():
            text = str(value)
            if value:
                text = spellings[k % len(spellings)].format(value)
                k += 1
            fields.append(_quoted(text) if v.quote_values else text)
        lines.append(v.sep.join([_quoted(name) if v.quote_genes else name, *fields]))
    text = v.newline.join(lines)
    if v.final_newline:
        text += v.newline
    text += v.newline * v.trailing_blank_lines
    return (b"\xef\xbb\xbf" if v.bom else b"") + text.encode()


def write_gz(path: Path, data: bytes, members: int = 1) -> Path:
    """Gzip ``data`` into ``path`` as ``members`` concatenated members (like ``cat a.gz b.gz``)."""
    cuts = np.linspace(0, len(data), members + 1).astype(int)
    path.write_bytes(b"".join(gzip.compress(data[a:b]) for a, b in pairwise(cuts)))
    return path


def write_count_csv(
    path: Path,
    counts: np.ndarray,
    genes: list[str] | None = None,
    barcodes: list[str] | None = None,
    variant: Variant = Variant(),
) -> Path:
    """Write a genes x cells integer matrix as ``variant`` says (default: a gzipped CSV, genes
    as rows); default names G0.., AAAC-0.."""
    n_genes, n_cells = counts.shape
    genes = [f"G{i}" for i in range(n_genes)] if genes is None else genes
    barcodes = [f"AAAC-{j}" for j in range(n_cells)] if barcodes is None else barcodes
    text = render(counts, genes, barcodes, variant)
    if not variant.compress:
        path.write_bytes(text)
        return path
    return write_gz(path, text, variant.members)


@dataclass(frozen=True)
class Reference:
    barcodes: list[str]
    genes: list[str]
    X: scipy.sparse.csr_matrix
    counts: np.ndarray  # dense cells x genes int64: the exact integers, for the sums


def pandas_reference(path: Path, variant: Variant = Variant()) -> Reference:
    """The tutorial recipe, cast to float32 and made canonical.

    For ``cells_x_genes`` the header's gene symbols are read as strings on their own: pandas
    would rename repeated column names (``A``, ``A.1``).
    """
    if variant.orientation == GENES_X_CELLS:
        df = pd.read_csv(path, sep=variant.sep, index_col=0)
        cells = df.T
        genes, barcodes = [str(g) for g in df.index], [str(c) for c in df.columns]
    else:
        header = pd.read_csv(
            path, sep=variant.sep, header=None, nrows=1, dtype=str, keep_default_na=False
        )
        cells = pd.read_csv(path, sep=variant.sep, header=None, skiprows=1, index_col=0)
        genes, barcodes = header.iloc[0, 1:].tolist(), [str(c) for c in cells.index]
    X = scipy.sparse.csr_matrix(cells.values.astype(np.float32))
    X.eliminate_zeros()
    X.sort_indices()
    return Reference(barcodes, genes, X, cells.values.astype(np.int64))


def assert_same_matrix(parsed, reference: Reference, flag_prefix: str = "") -> None:
    """The parser's result equals the reference exactly, in the promised dtypes and form.

    Its sums too, given the ``flag_prefix`` it was parsed with.
    """
    counts, sums = reference.counts, parsed.sums
    flagged = np.array([bool(flag_prefix) and g.startswith(flag_prefix) for g in reference.genes])
    np.testing.assert_array_equal(sums.cell_nnz, (counts != 0).sum(axis=1))
    np.testing.assert_array_equal(sums.cell_total, counts.sum(axis=1))
    np.testing.assert_array_equal(sums.cell_flagged_total, counts[:, flagged].sum(axis=1))
    np.testing.assert_array_equal(sums.gene_nnz, (counts != 0).sum(axis=0))
    np.testing.assert_array_equal(sums.gene_total, counts.sum(axis=0))
    np.testing.assert_array_equal(sums.gene_flagged, flagged.astype(bool))
    X = parsed.X
    assert isinstance(X, scipy.sparse.csr_matrix)
    assert X.shape == reference.X.shape
    assert X.dtype == np.float32
    assert X.indices.dtype == np.int32 and X.indptr.dtype == np.int32
    assert np.array_equal(X.indptr, reference.X.indptr)
    assert np.array_equal(X.indices, reference.X.indices)
    assert np.array_equal(X.data, reference.X.data)
    assert not (X.data == 0).any()
    assert parsed.barcodes == reference.barcodes
    assert parsed.genes == reference.genes


INT32_MAX = 2**31 - 1


def random_counts(rng: np.random.Generator, shape: tuple[int, int], density: float) -> np.ndarray:
    """Mostly zeros, small counts, and now and then a huge one (up to the int32 limit)."""
    counts = rng.geometric(0.4, size=shape).astype(np.int64)
    huge = rng.random(shape) < 0.02
    counts[huge] = rng.integers(2**24 - 2, INT32_MAX, endpoint=True, size=int(huge.sum()))
    counts[rng.random(shape) >= density] = 0
    return counts


@st.composite
def matrices(draw) -> tuple[np.ndarray, list[str], list[str]]:
    shape = draw(
        st.one_of(
            st.tuples(st.integers(1, 30), st.integers(1, 30)),
            st.tuples(st.just(1), st.integers(1, 400)),  # very wide
            st.tuples(st.integers(1, 400), st.just(1)),  # very narrow
        )
    )
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    counts = random_counts(rng, shape, density)
    # Gene names as in real files (letters first, so pandas keeps them as strings), with
    # repeats; barcodes unique.
    pool = [f"{p}{i}" for p in ("MT-CO", "RPL", "AC0.", "LINC-") for i in range(6)]
    genes = [pool[i] for i in rng.integers(0, len(pool), shape[0])]
    barcodes = [f"{''.join(rng.choice(list('ACGT'), 8))}-{j}" for j in range(shape[1])]
    return counts, genes, barcodes


#: One of :data:`LAYOUTS`, in the default spelling.
layouts = st.sampled_from(LAYOUTS)

variants = st.builds(
    Variant,
    sep=st.sampled_from([",", "\t"]),
    compress=st.booleans(),
    orientation=st.sampled_from([GENES_X_CELLS, CELLS_X_GENES]),
    newline=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
    quote_header=st.booleans(),
    quote_genes=st.booleans(),
    quote_values=st.booleans(),
    final_newline=st.booleans(),
    float_values=st.booleans(),
    trailing_blank_lines=st.integers(0, 2),
    members=st.integers(1, 3),
    corner=st.sampled_from(["", "gene"]),
)

hypothesis_settings = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
