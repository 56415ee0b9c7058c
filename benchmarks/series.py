"""The benchmark input: a demo series shaped like GSE174609, generated once and cached."""

from __future__ import annotations

import shutil
from pathlib import Path

from sc_assets.core.demo import write_demo_series

#: Cache of the full-size series, outside git (``.gitignore`` has ``/benchmarks/.cache/``).
CACHE_DIR = Path(__file__).resolve().parent / ".cache"


def ensure_series(folder: Path, *, scale: float, samples: int, seed: int = 0) -> list[Path]:
    """The files of the demo series ``(scale, samples, seed)`` in a subfolder of ``folder``.

    Written on first use (~35 s at full size on 2 cores) and reused afterwards: a marker file
    next to the subfolder records that the series is complete, so an interrupted generation
    is redone instead of benchmarking a partial series.
    """
    name = f"series-scale{scale:g}-samples{samples}-seed{seed}"
    data_dir, done = folder / name, folder / f"{name}.complete"
    if not done.exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        write_demo_series(data_dir, scale=scale, samples=samples, seed=seed, workers=2)
        done.touch()
    return sorted(data_dir.glob("*_count_matrix.csv.gz"))
