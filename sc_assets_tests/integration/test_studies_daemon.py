"""Two declared studies through the daemon: ``dg dev`` in a dg project of studies, files
dropped into both inboxes, each study's sensor, runs and merge on its own (issue 17)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import anndata as ad
import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from sc_assets.dagster_home import ensure_dagster_home
from sc_assets_tests.integration.conftest import free_port, start_dev, stop_dagster_dev
from sc_assets_tests.test_studies import make_project, write_study

pytestmark = pytest.mark.integration

DG = str(Path(sys.executable).with_name("dg"))


def test_dropped_files_of_two_studies_are_ingested_and_merged_apart(tmp_path):
    project = make_project(tmp_path / "project")
    for name in ("layouts", "geo"):  # sensors every 2 s
        declared = (project / "labstudies" / "defs" / name / "defs.yaml").read_text()
        attributes = yaml.safe_load(declared)["attributes"]
        write_study(project, name, {**attributes, "sensor_interval_seconds": 2})
    # layouts' samplesheet is there from the start (a missing one fails the load, by
    # design); geo's good files land once the daemon runs.
    staged = tmp_path / "staged"
    shutil.move(project / "studies" / "geo", staged)
    (project / "studies" / "geo").mkdir()
    home = ensure_dagster_home(tmp_path / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SC_ASSETS_")}
    env.update(
        DAGSTER_HOME=str(home),
        PYTHONPATH=str(project),
        SC_ASSETS_DATA_DIR=str(tmp_path / "no_default_data"),
        SC_ASSETS_STORAGE_DIR=str(project / "storage"),
    )
    dev = start_dev(
        [DG, "dev"], project, env, free_port(), home, project / "studies", project / "storage",
        tmp_path, location="labstudies",
    )  # fmt: skip
    try:
        for name in ("GSM5320459_Ctrl1", "GSM5320460_Ctrl2"):
            shutil.copy(staged / f"{name}_count_matrix.csv.gz", project / "studies" / "geo")

        def merged(study: str, n_samples: int):
            with DagsterInstance.from_config(str(home)) as instance:
                event = instance.get_latest_materialization_event(AssetKey([study, "merged_adata"]))
            if event is None:
                return None
            samples = event.asset_materialization.metadata["samples"].value
            return samples if len(samples) == n_samples else None

        assert dev.wait_until(lambda: merged("geo", 2), timeout=300, what="geo's merge") == [
            "GSM5320459_Ctrl1", "GSM5320460_Ctrl2",
        ]  # fmt: skip
        layouts = dev.wait_until(lambda: merged("layouts", 4), timeout=300, what="layouts' merge")
        assert layouts == ["cellranger_h5", "geo_csv", "h5ad_layer", "mtx_v3"]
    finally:
        stop_dagster_dev(dev)
    geo = ad.read_h5ad(project / "storage" / "gse" / "merged_adata.h5ad")
    assert sorted(set(geo.obs["sample"])) == ["Ctrl1", "Ctrl2"]
    with DagsterInstance.from_config(str(home)) as instance:
        jobs = {run.job_name for run in instance.get_runs()}
        assert {"geo__ingest_sample", "layouts__ingest_sample"} <= jobs
        assert instance.get_dynamic_partitions("samples") == []  # the default study: untouched
