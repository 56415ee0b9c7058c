"""``sc-assets``: demo data, headless ingestion and reports from the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sc_assets.core.remote import location
from sc_assets.dagster_home import ensure_dagster_home

if TYPE_CHECKING:
    from sc_assets.ingest import IngestReport, RunOutcome


#: What every --help ends with, after the command's exit codes.
_ENVIRONMENT = """\
The Dagster instance (runs, partitions, check results) is DAGSTER_HOME, by default
.dagster_home/ in the current folder; SC_ASSETS_* variables configure the rest (README).
A setting that cannot be used is refused with one line and exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sc-assets`` command; returns the exit code.

    Expected failures (a setting that cannot be used, a home that is not what was asked for)
    are one line on stderr and exit code 2, never a traceback.
    """
    from sc_assets.dagster_home import HomeConflict

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (HomeConflict, _Refused) as error:
        print(f"sc-assets: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        from sc_assets.settings import SettingsError

        if not isinstance(error, SettingsError):
            raise
        print(f"sc-assets: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # an object store that cannot be reached or refuses: one line
        if not _object_store_error(error):
            raise
        print(f"sc-assets: the object store refused or cannot be reached: {error} (check "
              "AWS_ENDPOINT_URL and the AWS credentials)", file=sys.stderr)  # fmt: skip
        return 2


def _object_store_error(error: BaseException) -> bool:
    """Whether ``error`` is botocore's (s3:// paths): no endpoint, no credentials, refused."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return False
    return isinstance(error, (BotoCoreError, ClientError))


class _Refused(Exception):
    """A command refused before doing anything; the message says what to do instead."""


def _command(
    commands, name: str, summary: str, details: str, exits: str
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}.\n\n{details}",
        epilog=f"exit codes: {exits}\n{_ENVIRONMENT}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sc-assets",
        description="Single-cell count matrices as Dagster assets: demo data, ingest, report.",
        epilog=_ENVIRONMENT,
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = _command(
        commands,
        "demo-data",
        "write realistic synthetic GSE174609-style sample files",
        "Writes OUT_DIR/<GSM>_<condition><n>_count_matrix.csv.gz (genes x cells, like GEO's)\n"
        "and prints their paths. --scale 1 is the real series' size (~9,000 cells, 27 MB\n"
        "gzipped per sample); --scale 0.02 (make demo's) gives ~180 cells. Samples under the\n"
        "cell_count minimum (SC_ASSETS_MIN_CELLS, 100) are written with a warning: they will\n"
        "fail that check.",
        "0 written, 2 refused (a scale or number of samples that cannot be).",
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

    ingest = _command(
        commands,
        "ingest",
        "materialize every sample in the data folder, then the merge",
        "Registers a partition per sample, pins reference_genes if it never was, runs the\n"
        "samples in batches in --workers processes, then merged_adata, and prints a table.\n"
        "Stored files go to the storage folder; an instance (DAGSTER_HOME) belongs to one\n"
        "study and one storage folder, and pointing it at others is refused (exit 2).\n"
        "Every study of the project (`sc-assets studies`), or --study NAME's; --data-dir,\n"
        "--samplesheet and --storage-dir configure the default study.",
        "0 every sample and the merge succeeded and no ERROR check failed, 1 one did\n"
        "not, 2 refused before running anything (a missing folder, an invalid samplesheet,\n"
        "another study's or storage folder's DAGSTER_HOME).",
    )
    ingest.add_argument(
        "--data-dir",
        type=location,
        help="the default study's input folder, or an s3:// URL (SC_ASSETS_DATA_DIR)",
    )
    ingest.add_argument(
        "--samplesheet",
        type=location,
        help="samplesheet CSV (SC_ASSETS_SAMPLESHEET; default: samplesheet.csv in the data "
        "folder if there is one, else the folder is scanned)",
    )
    ingest.add_argument("--storage-dir", help="output root (SC_ASSETS_STORAGE_DIR)")
    ingest.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="parallel sample runs (cores)"
    )
    ingest.add_argument(
        "--study",
        metavar="NAME",
        help="ingest only this study (default: every study of the project; `sc-assets studies`)",
    )
    ingest.set_defaults(run=_ingest)

    validate = _command(
        commands,
        "validate-samplesheet",
        "check a samplesheet without running anything (exit 0 when valid)",
        "Reads the sheet and every input it names (existence and layout, not the counts)\n"
        "and lists its samples; every problem is reported with its line and column.",
        "0 valid, 1 invalid (every problem listed), 2 the file cannot be read.",
    )
    validate.add_argument("samplesheet", type=Path, metavar="PATH")
    validate.set_defaults(run=_validate_samplesheet)

    report = _command(
        commands,
        "report",
        "write Markdown and HTML reports of the latest check results",
        "Reads the instance in DAGSTER_HOME (never creates one: with no runs there it says so\n"
        "and exits 2) and writes report.md and report.html into --out for the default\n"
        "study, and into --out/<study>/ for each declared study that has samples.",
        "0 no ERROR check fails, 1 one does (or the merge never ran), 2 no runs found.",
    )
    report.add_argument("--out", type=Path, default=Path("reports"), help="folder (reports/)")
    report.set_defaults(run=_report)

    export = _command(
        commands,
        "export",
        "write the merged .h5ad as one self-contained file, for sharing",
        "On local storage merged_adata.h5ad is a view of per-sample parts kept beside it\n"
        "(merged_adata.h5ad.parts/: the incremental merge); export writes the same data as\n"
        "one file that needs nothing else, as a full merge writes it. On object storage the\n"
        "merged object is already self-contained: it is downloaded.",
        "0 written, 2 nothing to export (never merged) or the merged file's parts are damaged\n"
        "(what is wrong and how to rebuild said).",
    )
    export.add_argument("asset", choices=["merged"], help="what to export: merged (merged_adata)")
    export.add_argument("out", type=Path, metavar="OUT.h5ad")
    export.add_argument("--study", metavar="NAME", help="a declared study's (default: default)")
    export.set_defaults(run=_export, data_dir=None, samplesheet=None, storage_dir=None)

    studies = _command(
        commands,
        "studies",
        "list the studies of the code location, their samples and last merge",
        "The default study (SC_ASSETS_* variables) and every study declared in a\n"
        "defs/<study>/defs.yaml of the project (`dg list defs` shows their definitions).\n"
        "Counts come from DAGSTER_HOME when there is an instance; none is created.",
        "0 listed, 2 a study's defs.yaml cannot be loaded (the file and attribute named).",
    )
    studies.set_defaults(run=_studies)

    home = _command(
        commands,
        "init-home",
        "create DAGSTER_HOME (.dagster_home/) with a default dagster.yaml",
        "Prints the home's path (stdout) and what its dagster.yaml holds (stderr). An\n"
        "existing dagster.yaml is kept; --postgres on a home that stores in SQLite is refused\n"
        "unless --force, which replaces the file (the old one kept as dagster.yaml.before-<n>;\n"
        "runs stored in SQLite are not copied).",
        "0 done, 2 refused (a dagster.yaml of another storage exists and no --force).",
    )
    home.add_argument(
        "--postgres",
        action="store_true",
        help="store runs and events in PostgreSQL at $DAGSTER_POSTGRES_URL instead of SQLite",
    )
    home.add_argument(
        "--force",
        action="store_true",
        help="replace an existing dagster.yaml (kept as dagster.yaml.before-<n>)",
    )
    home.set_defaults(run=_init_home_command)
    return parser


def _home() -> Path:
    """DAGSTER_HOME (default ``.dagster_home`` here), absolute, set for this process."""
    home = Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").absolute()
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _init_home() -> Path:
    """Make sure DAGSTER_HOME is set (default ``.dagster_home``) and holds a dagster.yaml."""
    return ensure_dagster_home(_home())


def _init_home_command(args: argparse.Namespace) -> int:
    from sc_assets.dagster_home import init_home

    home = _home()
    print(init_home(home, postgres=args.postgres, force=args.force), file=sys.stderr)
    if args.postgres and not os.environ.get("DAGSTER_POSTGRES_URL"):
        print(
            "sc-assets: set DAGSTER_POSTGRES_URL before using it, e.g. "
            "postgresql+psycopg2://postgres@127.0.0.1:5432/dagster",
            file=sys.stderr,
        )
    print(home)
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    if not args.scale > 0 or args.samples < 1:
        raise _Refused(
            f"--scale {args.scale} --samples {args.samples}: expected a scale above 0 and at "
            "least one sample"
        )
    if args.all_layouts:
        from sc_assets.core.demo_layouts import write_layout_study

        print(write_layout_study(args.out_dir, scale=args.scale, seed=args.seed))
        return 0
    from sc_assets.core.demo import demo_cell_counts, write_demo_series
    from sc_assets.settings import Settings

    minimum = Settings.from_env().thresholds.min_cells
    cells = demo_cell_counts(args.scale, args.samples)
    paths = write_demo_series(args.out_dir, scale=args.scale, samples=args.samples, seed=args.seed)
    for path in paths:
        print(path)
    small = sum(n < minimum for n in cells)
    if small:
        print(
            f"sc-assets: warning: {small} of {len(cells)} samples have fewer than {minimum} cells "
            f"(as few as {min(cells)}) and will fail the cell_count check (SC_ASSETS_MIN_CELLS); "
            f"--scale {_scale_for(minimum, args.scale, min(cells))} or more avoids that",
            file=sys.stderr,
        )
    return 0


def _scale_for(min_cells: int, scale: float, smallest: int) -> str:
    """The smallest round scale giving the smallest sample ``min_cells`` cells."""
    needed = scale * min_cells / max(smallest, 1) * 1.01
    return f"{math.ceil(needed * 100) / 100:g}"


def _ingest(args: argparse.Namespace) -> int:
    from sc_assets.ingest import configure_environment
    from sc_assets.settings import Settings

    configure_environment(args.data_dir, args.storage_dir, args.samplesheet)
    Settings.from_env()  # every setting checked before anything is loaded or written
    if args.workers < 1:
        raise _Refused(f"--workers {args.workers}: expected at least 1")
    studies = _chosen_studies(args)
    problems = {entry.keys.name: _missing_input(entry.settings) for entry in studies}
    if len(studies) == 1 and problems[studies[0].keys.name]:
        raise _Refused(problems[studies[0].keys.name])
    _init_home()

    from dagster import DagsterInstance

    from sc_assets.binding import binding_conflict, study_name
    from sc_assets.core.samplesheet import SamplesheetError
    from sc_assets.ingest import ingest

    code = 0
    with DagsterInstance.get() as instance:
        for entry in studies:
            settings = entry.settings
            conflict = binding_conflict(
                instance,
                entry.keys,
                storage_dir=settings.storage_dir,
                study=study_name(
                    str(settings.data_dir),
                    str(settings.samplesheet) if settings.samplesheet else None,
                ),
                home=str(settings.dagster_home),
            )
            if conflict is not None:
                raise _Refused(f"{_study_label(entry, studies)}{conflict}")
        for entry in studies:
            settings = entry.settings
            if len(studies) > 1:
                print(f"study {entry.keys.name}:")
            if problems[entry.keys.name]:
                print(f"  skipped: {problems[entry.keys.name]}\n")
                continue
            if len(studies) > 1 and not _has_samples(entry, instance):
                source = settings.samplesheet or settings.data_dir
                print(f"  skipped: no samples in {source} yet\n")
                continue
            try:
                report = ingest(
                    settings.data_dir,
                    instance,
                    samplesheet=settings.samplesheet,
                    workers=args.workers,
                    study=entry.keys,
                )
            except SamplesheetError as error:
                print(
                    f"sc-assets: {_study_label(entry, studies)}nothing ingested, the samplesheet "
                    f"is invalid:\n{error}",
                    file=sys.stderr,
                )
                code = 2
                continue
            print(_ingest_table(report) + ("\n" if len(studies) > 1 else ""))
            code = max(code, 0 if report.ok else 1)
    return code


def _chosen_studies(args: argparse.Namespace) -> list:
    """The studies ``ingest`` works on: ``--study``'s, else every study of the project."""
    studies = _project_studies()
    if args.study is None:
        return list(studies.values())
    if args.study not in studies:
        raise _Refused(
            f"--study {args.study}: no such study (the studies are: {', '.join(studies)})"
        )
    entry = studies[args.study]
    given = [f for f in ("data_dir", "samplesheet", "storage_dir") if getattr(args, f)]
    if entry.declared_in is not None and given:
        flag = "--" + given[0].replace("_", "-")
        raise _Refused(
            f"{flag} configures the default study; study {args.study} is configured by "
            f"{entry.declared_in}"
        )
    return [entry]


def _project_studies() -> dict:
    """The studies of the dg project of the current folder, or a refusal saying why not."""
    from sc_assets.location import declared_studies, project_root_of

    try:
        return dict(declared_studies(project_root_of(Path.cwd())))
    except Exception as error:  # a study's defs.yaml that cannot be loaded: say so, no trace
        from sc_assets.settings import SettingsError

        if isinstance(error, SettingsError):
            raise
        raise _Refused(f"the studies cannot be loaded: {_causes(error)}") from None


def _causes(error: BaseException) -> str:
    """What is wrong with a study's defs.yaml, in one line: ours (file: attribute: problem),
    or each of pydantic's errors as Dagster locates them (``<attribute> at <file>:<line>``)."""
    from sc_assets.component import StudyError

    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__
    for cause in chain:
        if isinstance(cause, StudyError):
            return str(cause)
        if type(cause).__name__ == "ValidationError":
            problems, where = [], None
            for line in str(cause).splitlines():
                if line.startswith("`"):
                    where = line.strip("`")
                elif where and line.startswith("  ") and "errors.pydantic.dev" not in line:
                    # a template string is also accepted where a mapping is: not the problem
                    if not where.split(" at ")[0].endswith(".str"):
                        problems.append(f"{where}: {line.strip().split(' [type=')[0]}")
                    where = None
            if problems:
                return "; ".join(problems)
    return " ".join(str(chain[-1]).split())


def _study_label(entry, studies) -> str:
    return f"study {entry.keys.name}: " if len(studies) > 1 else ""


def _has_samples(entry, instance) -> bool:
    """The study has samples now, or had some (so that removed ones are handled)."""
    from sc_assets.core.inbox import scan_inbox
    from sc_assets.core.samplesheet import SamplesheetError

    if instance.get_dynamic_partitions(entry.keys.partitions_name):
        return True
    try:
        return bool(scan_inbox(entry.settings.data_dir, entry.settings.samplesheet).samples)
    except SamplesheetError:
        return True  # ingest says what is wrong with it


def _missing_input(settings) -> str | None:
    if settings.samplesheet is not None:
        if not settings.samplesheet.is_file():
            return f"{settings.samplesheet}: the samplesheet does not exist"
    elif not settings.data_dir.is_dir():
        return f"{settings.data_dir}: the data folder does not exist"
    return None


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


def _has_instance(home: Path) -> bool:
    """Whether ``home`` holds a Dagster instance (opening one elsewhere would create it)."""
    return (home / "dagster.yaml").is_file() or (home / "history").is_dir()


def _report(args: argparse.Namespace) -> int:
    home = _home()
    if not _has_instance(home):
        raise _Refused(f"no runs found in DAGSTER_HOME={home} (no Dagster instance there)")
    studies = _project_studies()
    from dagster import DagsterInstance

    from sc_assets.report import write_report

    ok = True
    with DagsterInstance.get() as instance:
        if instance.get_runs_count() == 0:
            raise _Refused(f"no runs found in DAGSTER_HOME={home}")
        for entry in studies.values():
            if entry.declared_in is not None and not instance.get_dynamic_partitions(
                entry.keys.partitions_name
            ):
                print(f"study {entry.keys.name}: no samples yet, no report")
                continue
            out = args.out if entry.declared_in is None else args.out / entry.keys.name
            result = write_report(instance, out, entry.keys)
            ok = ok and result.ok
            print(f"wrote {result.markdown_path} and {result.html_path}")
    return 0 if ok else 1


def _export(args: argparse.Namespace) -> int:
    from upath import UPath

    from sc_assets.core.atomic import atomic_path
    from sc_assets.core.incremental import MergedFileError, export_merged, parts_folder
    from sc_assets.io_managers import is_local

    if args.study is None:
        args.study = "default"
    (entry,) = _chosen_studies(args)
    merged = UPath(entry.settings.storage_dir) / "merged_adata.h5ad"
    if not merged.exists():
        raise _Refused(f"{merged} does not exist: merge first (sc-assets ingest)")
    if not is_local(merged):
        with atomic_path(args.out) as tmp:
            merged.fs.get_file(merged.path, str(tmp))
    elif parts_folder(merged.path).is_dir():
        try:
            export_merged(merged.path, args.out)
        except MergedFileError as error:
            raise _Refused(str(error)) from None
    else:  # written by a full merge: self-contained already
        with atomic_path(args.out) as tmp:
            shutil.copyfile(merged.path, tmp)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:,.1f} MB) from {merged}")
    return 0


def _studies(args: argparse.Namespace) -> int:
    studies = _project_studies()
    rows = [("study", "input", "storage", "samples", "last merge")]
    instance = None
    if _has_instance(_home()):
        from dagster import DagsterInstance

        instance = DagsterInstance.get()
    try:
        for entry in studies.values():
            settings = entry.settings
            source = settings.samplesheet or settings.data_dir
            samples, merged = "0", "never"
            if instance is not None:
                samples = f"{len(instance.get_dynamic_partitions(entry.keys.partitions_name)):,}"
                event = instance.get_latest_materialization_event(entry.keys.merged_adata)
                if event is not None:
                    when = dt.datetime.fromtimestamp(event.timestamp, dt.UTC)
                    merged = when.strftime("%Y-%m-%d %H:%M UTC")
            rows.append((entry.keys.name, str(source), settings.storage_dir, samples, merged))
    finally:
        if instance is not None:
            instance.dispose()
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
