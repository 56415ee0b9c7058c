"""A study with many samples registered: is everything a user looks at still interactive?

``python -m benchmarks.registered FOLDER N1 N2 ...`` grows one study to N1, then N2... small
samples (100 cells, 10 genes, 90% zeros: they pass every ERROR check), ingesting each step
with ``sc-assets ingest``'s own code (real runs, checks and merges on a persistent SQLite
instance), and at every size times, as medians of three after one warm-up call:

* ``sensor_tick``: ``new_samples_sensor``'s steady-state tick (every file known, nothing new);
* ``sensor_tick_one_new``: a tick that finds one new file among the N;
* ``blocked_query``: the merge's "which samples are blocked" query (``sample_statuses``);
* ``report``: ``sc-assets report``'s gathering of every sample's checks (``gather_report``);
* ``partitions_page``: the GraphQL query of the asset's partitions page in the UI (partition
  keys and their materialized/failed status), through a code server as the webserver uses.

Prints one JSON line: ``{N: {name: seconds}}``. :func:`section` runs it for ``make bench``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path

PAGE_QUERY = """
query PartitionHealth($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      partitionKeysByDimension { name partitionKeys }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses {
          materializedPartitions materializingPartitions failedPartitions
        }
      }
    }
  }
}
"""
GENES = ["MT-CO1", *(f"GENE{i}" for i in range(1, 10))]
CELLS = 100


def write_samples(data_dir: Path, first: int, last: int) -> None:
    """Samples ``first`` to ``last - 1``: GEO-named, 100 cells with one UMI each."""
    data_dir.mkdir(parents=True, exist_ok=True)
    settled = time.time() - 120
    for i in range(first, last):
        path = data_dir / f"GSM{9_000_000 + i}_Ctrl{i + 1}_count_matrix.csv.gz"
        header = "," + ",".join(f"AAAC{i:05d}-{c}" for c in range(CELLS))
        rows = [
            gene + "," + ",".join("1" if (c + i) % len(GENES) == g else "0" for c in range(CELLS))
            for g, gene in enumerate(GENES)
        ]
        path.write_bytes(gzip.compress("\n".join([header, *rows, ""]).encode(), mtime=0))
        os.utime(path, (settled, settled))


#: What a user waits for, in the order of the table.
MEASURES = {
    "sensor_tick": "sensor tick, nothing new",
    "sensor_tick_one_new": "sensor tick, one new file",
    "blocked_query": "merge's blocked-samples query",
    "report": "sc-assets report (gathering)",
    "partitions_page": "UI partitions page (GraphQL)",
}
#: The issue's bound on each, in seconds.
INTERACTIVE_S = 5.0


def section(ctx):
    """The section: one study grown to each size, every measure at each."""
    from benchmarks.measure import PYTHON
    from benchmarks.report import Check, Section, Table, seconds

    sizes = ctx.config.registered_sizes
    section = Section("registered", "Many registered samples: is it still interactive?")
    ctx.settle()
    command = [PYTHON, "-m", "benchmarks.registered", str(ctx.work / "registered")]
    measured = ctx.measure(section, "registered", [*command, *map(str, sizes)])
    raw = measured.result
    table = Table(["measure", *(f"{n} samples s" for n in sizes)])
    for key, label in MEASURES.items():
        table.rows.append([label, *(seconds(raw[str(n)][key]) for n in sizes)])
    section.raw = raw
    section.tables.append(
        (
            f"One study grown to {', '.join(map(str, sizes))} small samples (100 cells each, "
            "ingested for real: runs, checks, merges on a persistent SQLite instance); each "
            "measure is the median of three calls after a warm-up.",
            table,
        )
    )
    largest = str(max(sizes))
    worst = max(raw[largest].values())
    section.checks.append(
        Check(
            f"with {largest} samples registered, every measure under {INTERACTIVE_S:g} s",
            f"slowest {seconds(worst)} s",
            worst < INTERACTIVE_S,
        )
    )
    return section


def timed(function, repeats: int = 3) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        function()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("sizes", type=int, nargs="+")
    args = parser.parse_args()
    # Everything but the result goes to stderr, the code server's output included.
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    folder = args.folder.absolute()
    data, storage, home = folder / "data", folder / "storage", folder / "home"
    os.environ.update(
        SC_ASSETS_DATA_DIR=str(data), SC_ASSETS_STORAGE_DIR=str(storage), DAGSTER_HOME=str(home)
    )
    os.environ.pop("SC_ASSETS_SAMPLESHEET", None)

    from dagster import DagsterInstance, build_sensor_context
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    from sc_assets.dagster_home import ensure_dagster_home
    from sc_assets.ingest import ingest
    from sc_assets.partitions import SAMPLES_PARTITIONS_NAME
    from sc_assets.report import gather_report
    from sc_assets.resources import SampleInbox
    from sc_assets.sample_status import sample_statuses
    from sc_assets.sensors import build_new_samples_sensor

    ensure_dagster_home(home)
    sensor = build_new_samples_sensor(interval_seconds=30)
    inbox = SampleInbox(data_dir=str(data))
    results: dict[str, dict[str, float]] = {}
    written = 0
    with DagsterInstance.get() as instance:

        def tick(cursor):
            with build_sensor_context(
                instance=instance, cursor=cursor, resources={"inbox": inbox}
            ) as context:
                return sensor(context)

        for n in args.sizes:
            write_samples(data, written, n)
            written = n
            report = ingest(data, instance, workers=os.cpu_count() or 2)
            problems = [s.status for s in [*report.samples, report.merge] if s and not s.ok]
            assert report.ok, problems[:3]
            keys = instance.get_dynamic_partitions(SAMPLES_PARTITIONS_NAME)
            assert len(keys) == n
            cursor = None
            for _ in range(n // 100 + 2):  # the first ticks release the files, 100 a tick
                result = tick(cursor)
                cursor = result.cursor
            found = {"sensor_tick": timed(lambda cursor=cursor: tick(cursor))}
            write_samples(data, n, n + 1)  # one more file: found, hashed, requested
            one_new = tick(cursor)
            assert len(one_new.run_requests) == 1, one_new.skip_reason
            found["sensor_tick_one_new"] = timed(lambda cursor=cursor: tick(cursor))
            (data / f"GSM{9_000_000 + n}_Ctrl{n + 1}_count_matrix.csv.gz").unlink()
            found["blocked_query"] = timed(lambda keys=keys: sample_statuses(instance, keys))
            found["report"] = timed(lambda: gather_report(instance))
            workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
            with define_out_of_process_context(str(workspace), None, instance) as context:
                variables = {"assetKey": {"path": ["sample_adata"]}}

                def page(context=context, variables=variables, n=n):
                    result = execute_dagster_graphql(context, PAGE_QUERY, variables)
                    node = result.data["assetNodeOrError"]
                    statuses = node["assetPartitionStatuses"]["materializedPartitions"]
                    assert len(statuses) == n, result

                found["partitions_page"] = timed(page)
            results[str(n)] = found
            print(f"{n} samples: {found}", file=sys.stderr, flush=True)
    print(json.dumps(results), file=result_out, flush=True)


if __name__ == "__main__":
    main()
