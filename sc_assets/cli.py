"""``sc-assets``: demo data, headless ingestion and reports from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sc_assets.dagster_home import ensure_dagster_home

if TYPE_CHECKING:
    from sc_assets.ingest import IngestReport, RunOutcome


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sc-assets`` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sc-assets",
        description="Single-cell count matrices as Dagster assets: demo data, ingest, report.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo-data", help="write realistic synthetic GSE174609-style sample files"
    )
    demo.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    demo.add_argument("--scale", type=float, default=1.0, help="cells per sample x F (1.0)")
    demo.add_argument("--samples", type=int, default=12, help="number of samples (12)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    demo.add_argument(
        "--all-layouts",
        action="store_true",
        help="instead of the GEO series: one sample in each supported layout (Cell Ranger "
        "HDF5 and MTX, STARsolo, h5ad, CSV/TSV) and a samplesheet.csv naming them",
    )
    demo.set_defaults(run=_demo_data)

    ingest = commands.add_parser(
        "ingest", help="materialize every sample in the data folder, then the merge"
    )
    ingest.add_argument("--data-dir", type=Path, help="input folder (SC_ASSETS_DATA_DIR)")
    ingest.add_argument(
        "--samplesheet",
        type=Path,
        help="samplesheet CSV (SC_ASSETS_SAMPLESHEET; default: samplesheet.csv in the data "
        "folder if there is one, else the folder is scanned)",
    )
    ingest.add_argument("--storage-dir", help="output root (SC_ASSETS_STORAGE_DIR)")
    ingest.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="parallel sample runs (cores)"
    )
    ingest.set_defaults(run=_ingest)

    validate = commands.add_parser(
        "validate-samplesheet",
        help="check a samplesheet without running anything (exit 0 when valid)",
    )
    validate.add_argument("samplesheet", type=Path, metavar="PATH")
    validate.set_defaults(run=_validate_samplesheet)

    report = commands.add_parser(
        "report", help="write Markdown and HTML reports of the latest check results"
    )
    report.add_argument("--out", type=Path, default=Path("reports"), help="folder (reports/)")
    report.set_defaults(run=_report)

    home = commands.add_parser(
        "init-home", help="create DAGSTER_HOME (.dagster_home/) with a default dagster.yaml"
    )
    home.add_argument(
        "--postgres",
        action="store_true",
        help="store runs and events in PostgreSQL at $DAGSTER_POSTGRES_URL instead of SQLite",
    )
    home.set_defaults(run=lambda args: print(_init_home(postgres=args.postgres)) or 0)
    return parser


def _init_home(*, postgres: bool = False) -> Path:
    """Make sure DAGSTER_HOME is set (default ``.dagster_home``) and holds a dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").absolute()
    os.environ["DAGSTER_HOME"] = str(home)
    return ensure_dagster_home(home, postgres=postgres)


def _demo_data(args: argparse.Namespace) -> int:
    if args.all_layouts:
        from sc_assets.core.demo_layouts import write_layout_study

        print(write_layout_study(args.out_dir, scale=args.scale, seed=args.seed))
        return 0
    from sc_assets.core.demo import write_demo_series

    paths = write_demo_series(args.out_dir, scale=args.scale, samples=args.samples, seed=args.seed)
    for path in paths:
        print(path)
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from sc_assets.ingest import configure_environment

    configure_environment(args.data_dir, args.storage_dir, args.samplesheet)
    _init_home()

    from dagster import DagsterInstance

    from sc_assets.core.samplesheet import SamplesheetError
    from sc_assets.ingest import ingest
    from sc_assets.settings import Settings

    settings = Settings.from_env()
    if not settings.data_dir.is_dir() and settings.samplesheet is None:
        print(f"sc-assets: {settings.data_dir}: the data folder does not exist", file=sys.stderr)
        return 2
    if settings.samplesheet is not None and not settings.samplesheet.is_file():
        print(f"sc-assets: {settings.samplesheet}: the samplesheet does not exist", file=sys.stderr)
        return 2
    with DagsterInstance.get() as instance:
        try:
            report = ingest(
                settings.data_dir,
                instance,
                samplesheet=settings.samplesheet,
                workers=args.workers,
            )
        except SamplesheetError as error:
            print(
                f"sc-assets: nothing ingested, the samplesheet is invalid:\n{error}",
                file=sys.stderr,
            )
            return 2
    print(_ingest_table(report))
    return 0 if report.ok else 1


def _validate_samplesheet(args: argparse.Namespace) -> int:
    from sc_assets.core.samplesheet import SamplesheetError, read_samplesheet

    try:
        sheet = read_samplesheet(args.samplesheet)
    except SamplesheetError as error:
        print(error, file=sys.stderr)
        return 1
    except OSError as error:
        print(f"sc-assets: {args.samplesheet}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"{args.samplesheet}: valid, {len(sheet.specs)} samples")
    for spec in sheet.specs:
        print(f"  {spec.sample}: {spec.path} ({spec.format})")
    return 0


def _ingest_table(report: IngestReport) -> str:
    header = ("sample", "cells", "genes", "sparsity", "median UMIs", "status")
    outcomes = [(sample.partition_key or "", sample) for sample in report.samples]
    if report.merge is not None:
        outcomes.append(("merged_adata", report.merge))
    rows = [header] + [_table_row(name, outcome) for name, outcome in outcomes]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in rows
    ]
    lines += [f"ignored {name}: {reason}" for name, reason in report.ignored_files]
    return "\n".join(lines)


def _table_row(name: str, outcome: RunOutcome) -> tuple[str, ...]:
    s = outcome.summary
    formats = (
        ("n_obs", "{:,}"),
        ("n_vars", "{:,}"),
        ("sparsity", "{:.1%}"),
        ("median_total_counts", "{:,.0f}"),
    )
    cells = [fmt.format(s[key]) if key in s else "-" for key, fmt in formats]
    return (name, *cells, outcome.status)


def _report(args: argparse.Namespace) -> int:
    _init_home()
    from dagster import DagsterInstance

    from sc_assets.report import write_report

    with DagsterInstance.get() as instance:
        result = write_report(instance, args.out)
    print(f"wrote {result.markdown_path} and {result.html_path}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
