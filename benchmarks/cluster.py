"""Issue 18: the series through two Celery workers on simulated hosts, with object storage,
against ``sc-assets ingest`` on local disk, side by side.

The cluster is ``make cluster-demo``'s (sc_assets_tests/integration/cluster_demo.py):
PostgreSQL and RabbitMQ of this machine, moto's S3 API server, ``dagster dev`` with
``deploy/dagster.yaml``, two workers (``deploy/worker.sh``, one run at a time each) in network
namespaces. Timed from the moment the series is in the bucket's inbox until ``merged_adata``
(with every sample) is materialized: the sensor's look, the runs on the workers (reading from
and writing to the bucket) and the merge (staging the per-sample objects, uploading the
merged one). The local ingest is the end-to-end section's command with 2 workers.
"""

from __future__ import annotations

import shutil
import time

from benchmarks.report import Check, Section, Table, seconds

#: The issue's target: the cluster within this factor of the local ingest.
TARGET = 1.5


def section(ctx) -> Section:
    from benchmarks.sections import measure_ingest

    section = Section("cluster", "Two Celery workers with object storage vs local ingest")
    reason = "the smoke run leaves it to test_distributed.py" if ctx.config.smoke else ""
    reason = reason or _unavailable()
    if reason:
        section.notes.append(f"Not measured: {reason}.")
        return section
    from sc_assets_tests.integration.cluster_demo import (
        cluster,
        instance_of,
        merged_samples,
        wait_until,
    )

    keys = sorted(path.name.removesuffix("_count_matrix.csv.gz") for path in ctx.series)
    work = ctx.work / "cluster"
    shutil.rmtree(work, ignore_errors=True)
    local = measure_ingest(
        ctx, section, "local-ingest", ctx.series[0].parent, work / "storage", work / "home", 2
    )
    with cluster(work / "cluster") as state:
        upload_started = time.perf_counter()
        state.upload(list(ctx.series))
        uploaded = time.perf_counter()
        with instance_of(state) as instance:
            wait_until(
                lambda: merged_samples(instance) == keys,
                timeout=3600, what="the merge of the series", state=state,
            )  # fmt: skip
        done = time.perf_counter()
    distributed = done - uploaded
    table = Table(["", "wall s"])
    table.rows += [
        [f"sc-assets ingest, local disk, 2 workers ({len(keys)} samples)", seconds(local.wall_s)],
        ["upload of the series into the bucket (not counted)", seconds(uploaded - upload_started)],
        ["two Celery workers + S3: inbox to merged_adata", seconds(distributed)],
    ]
    section.tables.append(("One run each, local first.", table))
    share = distributed / local.wall_s
    section.checks.append(
        Check(
            f"the cluster within {TARGET}x of the local ingest",
            f"{share:.2f}x ({seconds(distributed)} s vs {seconds(local.wall_s)} s)",
            share <= TARGET,
        )
    )
    section.raw = {"local_s": local.wall_s, "cluster_s": distributed, "ratio": share}
    return section


def _unavailable() -> str:
    """Why the cluster cannot run here ('' when it can)."""
    import socket

    from sc_assets.simulated_hosts import available

    ok, reason = available()
    if not ok:
        return reason
    for name, port in (("PostgreSQL", 5432), ("RabbitMQ", 5672)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return f"no {name} at 127.0.0.1:{port}"
    if shutil.which("rabbitmqctl") is None:
        return "no rabbitmqctl"
    return ""
