"""Write small genes x cells count CSVs in the format variants the parser must accept.

Shared by the parser tests: :func:`write_count_csv` renders a numpy matrix with the chosen
variant (line endings, BOM, quoting, float spelling, gzip members...), :func:`pandas_reference`
reads a file the tutorial way, for comparison; :func:`matrices` and :data:`variants` are the
hypothesis strategies that draw them.
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


@dataclass(frozen=True)
class Variant:
    """How to spell a count matrix as CSV text (the defaults are the plain GEO format)."""

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


def _quoted(field: str) -> str:
    return '"' + field.replace('"', '""') + '"'


_FLOAT_SPELLINGS = ("{}.0", "{}.", "{}.000", "{}e0")


def render(
    counts: np.ndarray, genes: list[str], barcodes: list[str], variant: Variant = Variant()
) -> bytes:
    """The CSV text (genes as rows, cells as columns) of a genes x cells integer matrix."""
    v = variant
    header = [v.corner, *barcodes]
    if v.quote_header:
        header = [_quoted(f) for f in header]
    lines = [",".join(header)]
    spellings = _FLOAT_SPELLINGS if v.float_values else ("{}",)
    k = 0
    for gene, row in zip(genes, counts, strict=True):
        fields = []
        for value in row.tolist():
            text = str(value)
            if value:
                text = spellings[k % len(spellings)].format(value)
                k += 1
            fields.append(_quoted(text) if v.quote_values else text)
        lines.append(",".join([_quoted(gene) if v.quote_genes else gene, *fields]))
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
    """Write a genes x cells integer matrix as a gzipped CSV; default names G0.., AAAC-0.."""
    n_genes, n_cells = counts.shape
    genes = [f"G{i}" for i in range(n_genes)] if genes is None else genes
    barcodes = [f"AAAC-{j}" for j in range(n_cells)] if barcodes is None else barcodes
    return write_gz(path, render(counts, genes, barcodes, variant), variant.members)


@dataclass(frozen=True)
class Reference:
    barcodes: list[str]
    genes: list[str]
    X: scipy.sparse.csr_matrix
    counts: np.ndarray  # dense cells x genes int64: the exact integers, for the sums


def pandas_reference(path: Path) -> Reference:
    """The tutorial recipe, cast to float32 and made canonical."""
    df = pd.read_csv(path, index_col=0)
    X = scipy.sparse.csr_matrix(df.T.values.astype(np.float32))
    X.eliminate_zeros()
    X.sort_indices()
    counts = df.T.values.astype(np.int64)
    return Reference([str(c) for c in df.columns], [str(g) for g in df.index], X, counts)


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


variants = st.builds(
    Variant,
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
