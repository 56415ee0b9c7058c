"""The GraphQL API, as a user's script uses it against a running ``dagster dev``.

Plain HTTP queries list the assets and their checks, register partitions and read check
evaluations; dagster-graphql's client launches runs (a partition is a run tag) and polls them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from sc_assets.checks import MERGED_CHECKS, SAMPLE_CHECKS
from sc_assets_tests.conftest import copy_samples, write_sample
from sc_assets_tests.integration.conftest import REPOSITORY_SELECTOR, DagsterDev

pytestmark = [
    pytest.mark.integration,
    # dagster-graphql 1.13's client calls gql 4 the deprecated way; nothing this test can change
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]

GOOD = "GSM5320459_Ctrl1"  # a demo sample: passes every check
BAD = "GSM5320461_Pre1"  # 50 cells and 405 made-up genes: fails cell_count and gene_set
LOCATION = REPOSITORY_SELECTOR["repositoryLocationName"]
#: One run, queued then executed in its own process: ~10 s alone on 2 cores, more when busy.
RUN_TIMEOUT = 240

ASSETS = """
{
  assetNodes {
    assetKey { path }
    description
    groupName
    kinds
    opVersion
    isPartitioned
    assetChecksOrError {
      ... on AssetChecks { checks { name description blocking } }
    }
  }
}
"""

ADD_PARTITION = """
mutation ($repositorySelector: RepositorySelector!, $partitionKey: String!) {
  addDynamicPartition(
    repositorySelector: $repositorySelector, partitionsDefName: "samples",
    partitionKey: $partitionKey
  ) {
    __typename
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

CHECK_EXECUTIONS = """
query ($assetKey: AssetKeyInput!, $checkName: String!, $partition: String) {
  assetCheckExecutions(
    assetKey: $assetKey, checkName: $checkName, partition: $partition, limit: 1
  ) {
    runId
    status
    partition
    evaluation {
      success
      severity
      description
      metadataEntries {
        label
        ... on IntMetadataEntry { intValue }
        ... on TextMetadataEntry { text }
      }
    }
  }
}
"""

CHECK_PARTITIONS = """
query ($assetKey: AssetKeyInput!, $checkName: String!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      assetCheckOrError(checkName: $checkName) {
        ... on AssetCheck {
          partitionStatuses {
            ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions }
          }
        }
      }
    }
  }
}
"""


def test_a_script_lists_assets_launches_a_partition_and_reads_its_checks(
    idle_dagster_dev: DagsterDev, demo_files
):
    dev = idle_dagster_dev
    client = DagsterGraphQLClient("127.0.0.1", port_number=urlsplit(dev.url).port, timeout=60)

    # The assets and their checks, as the UI shows them: described, grouped, kinded, versioned.
    nodes = {"/".join(n["assetKey"]["path"]): n for n in dev.graphql(ASSETS)["assetNodes"]}
    assert set(nodes) == {"raw_count_matrix", "reference_genes", "sample_adata", "merged_adata"}
    assert all(n["description"] and n["groupName"] == "single_cell" for n in nodes.values())
    for name in ("sample_adata", "merged_adata"):
        assert set(nodes[name]["kinds"]) == {"anndata", "h5ad"}
        assert nodes[name]["opVersion"] == "1"
    assert nodes["sample_adata"]["isPartitioned"] and not nodes["merged_adata"]["isPartitioned"]
    checks = {
        name: {c["name"]: c for c in nodes[name]["assetChecksOrError"]["checks"]}
        for name in ("sample_adata", "merged_adata")
    }
    assert set(checks["sample_adata"]) == set(SAMPLE_CHECKS)
    assert set(checks["merged_adata"]) == set(MERGED_CHECKS)
    for check in (*checks["sample_adata"].values(), *checks["merged_adata"].values()):
        assert check["description"].startswith(("[ERROR] ", "[WARN] ")), check
    assert checks["sample_adata"]["cell_count"]["blocking"]
    assert not checks["sample_adata"]["empty_cells"]["blocking"]

    # Two files land; a script registers them as partitions (the sensor is idle here).
    copy_samples(demo_files, dev.data_dir, [GOOD])
    write_sample(dev.data_dir, BAD, n_cells=50)
    for key in (GOOD, BAD):
        result = dev.graphql(
            ADD_PARTITION, {"repositorySelector": REPOSITORY_SELECTOR, "partitionKey": key}
        )["addDynamicPartition"]
        assert result["__typename"] == "AddDynamicPartitionSuccess", result

    # Pin the reference genes, then one run per sample partition.
    wait_for_run(dev, client, launch(client, "pin_reference_genes"), DagsterRunStatus.SUCCESS)
    runs = {key: launch(client, "ingest_sample", partition=key) for key in (GOOD, BAD)}
    wait_for_run(dev, client, runs[GOOD], DagsterRunStatus.SUCCESS)
    # Blocking checks failed, so the run fails: the sample cannot enter the merge.
    wait_for_run(dev, client, runs[BAD], DagsterRunStatus.FAILURE)

    # Every check evaluated the good partition, in its run, and passed.
    sample = {"path": ["sample_adata"]}
    for name in SAMPLE_CHECKS:
        execution = latest_execution(dev, sample, name, GOOD)
        assert execution["status"] == "SUCCEEDED", execution
        assert execution["runId"] == runs[GOOD]
        assert execution["evaluation"]["success"]
        assert "summary" in metadata(execution)

    # The bad partition's failures explain themselves.
    cell_count = latest_execution(dev, sample, "cell_count", BAD)
    assert cell_count["status"] == "FAILED" and cell_count["runId"] == runs[BAD]
    assert cell_count["evaluation"]["severity"] == "ERROR"
    assert cell_count["evaluation"]["description"].startswith("Only 50 cells, fewer than")
    assert metadata(cell_count)["n_cells"] == 50
    assert metadata(cell_count)["min_cells"] == "100"  # a threshold: text, not plotted
    gene_set = latest_execution(dev, sample, "gene_set", BAD)
    assert gene_set["status"] == "FAILED"
    assert "genes missing" in gene_set["evaluation"]["description"]
    assert metadata(gene_set)["n_extra"] == 400  # GENE0..GENE399 are in no reference

    # Per partition, as the check's Partitions tab shows it.
    statuses = dev.graphql(CHECK_PARTITIONS, {"assetKey": sample, "checkName": "cell_count"})
    partitions = statuses["assetNodeOrError"]["assetCheckOrError"]["partitionStatuses"]
    assert partitions == {"succeededPartitions": [GOOD], "failedPartitions": [BAD]}


def launch(client: DagsterGraphQLClient, job: str, *, partition: str | None = None) -> str:
    """Submit a run of ``job`` (of one partition, given as the run's partition tag)."""
    tags = {"dagster/partition": partition} if partition else None
    return client.submit_job_execution(job, repository_location_name=LOCATION, tags=tags)


def wait_for_run(
    dev: DagsterDev, client: DagsterGraphQLClient, run_id: str, expected: DagsterRunStatus
) -> None:
    finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    status = dev.wait_until(
        lambda: (s := client.get_run_status(run_id)) in finished and s,
        timeout=RUN_TIMEOUT,
        what=f"run {run_id}",
    )
    assert status == expected, f"run {run_id}: {status}, expected {expected}\n{dev.tail()}"


def latest_execution(dev: DagsterDev, asset_key: dict, check: str, partition: str) -> dict:
    executions = dev.graphql(
        CHECK_EXECUTIONS, {"assetKey": asset_key, "checkName": check, "partition": partition}
    )["assetCheckExecutions"]
    assert len(executions) == 1, (check, partition, executions)
    assert executions[0]["partition"] == partition
    return executions[0]


def metadata(execution: dict) -> dict:
    """An evaluation's int and text metadata entries by label."""
    return {
        entry["label"]: entry.get("intValue", entry.get("text"))
        for entry in execution["evaluation"]["metadataEntries"]
    }
