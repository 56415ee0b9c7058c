import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from sc_assets.core.demo import (
    DUPLICATED_GENES,
    GSE174609,
    MT_GENES,
    N_GENES,
    demo_gene_symbols,
    demo_samples,
    simulate_counts,
    write_demo_series,
)
from sc_assets.core.names import parse_sample_name

BARCODE = re.compile(r"\A[ACGT]{16}-1\Z")


def test_the_series_table_is_gse174609():
    assert len(GSE174609) == 12
    assert sum(sample.n_cells for sample in GSE174609) == 107_424
    assert [s.name.sample for s in GSE174609] == [
        f"{condition}{donor}" for condition in ("Ctrl", "Pre", "Post") for donor in range(1, 5)
    ]
    assert GSE174609[0].name.file_name == "GSM5320459_Ctrl1_count_matrix.csv.gz"
    assert GSE174609[0].n_cells == 9413
    assert GSE174609[-1].name.file_name == "GSM5320470_Post4_count_matrix.csv.gz"
    assert GSE174609[-1].n_cells == 8320
    for sample in GSE174609:
        assert parse_sample_name(sample.name.file_name) == sample.name


def test_more_samples_continue_the_series():
    samples = demo_samples(17)
    assert samples[:12] == list(GSE174609)
    assert [s.name.partition_key for s in samples[12:]] == [
        "GSM5320471_Ctrl5",
        "GSM5320472_Ctrl6",
        "GSM5320473_Ctrl7",
        "GSM5320474_Ctrl8",
        "GSM5320475_Pre5",
    ]
    assert samples[12].n_cells == GSE174609[0].n_cells
    with pytest.raises(ValueError, match="samples"):
        demo_samples(0)


def test_gene_symbols_look_like_the_10x_reference():
    genes = demo_gene_symbols()
    assert len(genes) == N_GENES == 33_538
    assert demo_gene_symbols() == genes
    genes.append("X")  # callers get their own copy
    assert len(demo_gene_symbols()) == N_GENES
    genes = demo_gene_symbols()

    # The 13 MT genes, together and in chrM order, near the end; no other MT- symbol.
    mt = [i for i, gene in enumerate(genes) if gene.startswith("MT-")]
    assert [genes[i] for i in mt] == list(MT_GENES) and len(MT_GENES) == 13
    assert mt == list(range(mt[0], mt[0] + 13)) and mt[0] > N_GENES - 50
    assert genes[:3] == ["MIR1302-2HG", "FAM138A", "OR4F5"]

    counts = Counter(genes)
    assert {gene for gene, n in counts.items() if n > 1} == set(DUPLICATED_GENES)
    assert {"TBCE", "MATR3", "GOLGA8M"} <= set(DUPLICATED_GENES)
    assert all(counts[gene] == 2 for gene in DUPLICATED_GENES)

    known = {"CD3E", "CD14", "LYZ", "MS4A1", "NKG7", "GNLY", "ACTB", "MALAT1", "RPL13", "RPS27"}
    assert known <= set(genes)
    styles = {
        "clone": r"(AC|AL|AP)\d{6}\.\d+",
        "linc": r"LINC\d{5}",
        "fam": r"FAM\d+[A-F]?",
        "orf": r"C(\d+|X)orf\d+",
        "antisense": r".+-AS\d",
    }
    for style, pattern in styles.items():
        assert sum(re.fullmatch(pattern, g) is not None for g in genes) > 100, style
    assert all(re.fullmatch(r"[A-Za-z0-9.\-]+", gene) for gene in genes)


def test_simulated_counts_are_realistic():
    counts, barcodes = simulate_counts(0, 1500, seed=0)
    genes = np.array(demo_gene_symbols())
    assert counts.shape == (1500, N_GENES)
    assert counts.dtype.kind == "i" and counts.data.min() >= 1

    zero_fraction = 1 - counts.nnz / (counts.shape[0] * counts.shape[1])
    assert 0.935 < zero_fraction < 0.955  # GSE174609: ~94.6%
    totals = np.asarray(counts.sum(axis=1)).ravel()
    assert 4500 < np.median(totals) < 6500  # ~5,500 UMIs
    assert np.percentile(totals, 95) > 2 * np.percentile(totals, 5)  # log-normal spread
    mt_counts = np.asarray(counts[:, np.char.startswith(genes, "MT-")].sum(axis=1)).ravel()
    mt_percent = 100 * mt_counts / totals
    assert 3 < np.median(mt_percent) < 8
    assert np.percentile(mt_percent, 95) > 1.5 * np.percentile(mt_percent, 5)

    # Heavy-tailed genes: MALAT1 tops the non-MT genes, most genes are rare.
    per_gene = np.asarray(counts.sum(axis=0)).ravel()
    top = genes[np.argsort(-per_gene)[:20]]
    assert "MALAT1" in top and any(g.startswith(("RPL", "RPS")) for g in top)
    assert np.mean(per_gene < 0.001 * counts.shape[0]) > 0.3

    # Cell types: LYZ (monocytes) and CD3E (T cells) are expressed by different cells.
    lyz = counts[:, [int(np.flatnonzero(genes == "LYZ")[0])]].toarray().ravel()
    cd3e = counts[:, [int(np.flatnonzero(genes == "CD3E")[0])]].toarray().ravel()
    assert np.corrcoef(np.log1p(lyz), np.log1p(cd3e))[0, 1] < -0.2

    assert len(set(barcodes)) == 1500 and barcodes == sorted(barcodes)
    assert all(BARCODE.match(b) for b in barcodes)


def test_simulation_is_deterministic_and_samples_differ():
    first, barcodes = simulate_counts(3, 200, seed=7)
    again, barcodes_again = simulate_counts(3, 200, seed=7)
    assert (first != again).nnz == 0 and barcodes == barcodes_again
    other, other_barcodes = simulate_counts(4, 200, seed=7)
    assert (first != other).nnz > 0 and barcodes != other_barcodes
    reseeded, _ = simulate_counts(3, 200, seed=8)
    assert (first != reseeded).nnz > 0


def test_writes_the_series_with_geo_names_and_scaled_cell_numbers(tmp_path):
    out_dir = tmp_path / "new" / "data"  # created
    paths = write_demo_series(out_dir, scale=0.01, samples=13, workers=1)
    expected = demo_samples(13)
    assert [p.name for p in paths] == [s.name.file_name for s in expected]
    assert paths[-1].name == "GSM5320471_Ctrl5_count_matrix.csv.gz"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in paths)
    genes = demo_gene_symbols()
    for path, sample in zip(paths[:2], expected, strict=False):
        frame = pd.read_csv(path, index_col=0)
        assert frame.shape == (N_GENES, round(sample.n_cells * 0.01))
        assert list(frame.index) == genes
        assert all(BARCODE.match(b) for b in frame.columns) and frame.columns.is_unique
        assert all(dtype.kind == "i" for dtype in frame.dtypes)
    assert parse_sample_name(paths[4]).sample == "Pre1"


def test_series_bytes_depend_only_on_the_arguments(tmp_path):
    serial = write_demo_series(tmp_path / "a", scale=0.002, samples=3, seed=5, workers=1)
    parallel = write_demo_series(tmp_path / "b", scale=0.002, samples=3, seed=5, workers=2)
    assert [p.read_bytes() for p in serial] == [p.read_bytes() for p in parallel]
    assert len({p.read_bytes() for p in serial}) == 3  # samples differ
    reseeded = write_demo_series(tmp_path / "c", scale=0.002, samples=1, seed=6, workers=1)
    assert reseeded[0].read_bytes() != serial[0].read_bytes()
    # 0.002 x 9,413 cells -> 19 cells; a tiny scale still writes one cell per sample.
    assert pd.read_csv(serial[0], index_col=0).shape[1] == 19
    (tiny,) = write_demo_series(tmp_path / "d", scale=1e-9, samples=1, workers=1)
    assert pd.read_csv(tiny, index_col=0).shape == (N_GENES, 1)


def test_existing_files_are_replaced_without_leftovers(tmp_path):
    target = tmp_path / GSE174609[0].name.file_name
    target.write_bytes(b"not a count matrix")
    (other := tmp_path / "notes.txt").write_text("kept")
    (path,) = write_demo_series(tmp_path, scale=0.001, samples=1, workers=1)
    assert path == target and pd.read_csv(path, index_col=0).shape == (N_GENES, 9)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, other.name])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": 0}, "scale"),
        ({"scale": -1.0}, "scale"),
        ({"scale": float("nan")}, "scale"),
        ({"samples": 0}, "samples"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
    ],
)
def test_rejects_invalid_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_demo_series(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
