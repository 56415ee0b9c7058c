"""Several studies in one code location, declared in YAML (issue 17): a dg project of two
studies side by side, driven as a user drives it (``sc-assets`` and ``dg`` in subprocesses)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from sc_assets.core.demo import write_demo_series
from sc_assets.core.demo_layouts import write_layout_study
from sc_assets.core.readers import read_sample
from sc_assets.core.samplesheet import read_samplesheet
from sc_assets.dagster_home import ensure_dagster_home
from sc_assets.location import PROJECT_ROOT

DG = str(Path(sys.executable).with_name("dg"))
PYPROJECT = """\
[project]
name = "labstudies"
version = "0.1.0"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "labstudies"
defs_module = "labstudies.defs"
code_location_target_module = "labstudies.definitions"
code_location_name = "labstudies"
"""
DEFINITIONS = """\
from pathlib import Path

from sc_assets.location import project_definitions

defs = project_definitions(Path(__file__).resolve().parent.parent)
"""


def write_study(project: Path, folder: str, attributes: dict) -> Path:
    path = project / "labstudies" / "defs" / folder / "defs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"type": "sc_assets.ScRnaSeqStudy", "attributes": attributes}))
    return path


def make_project(root: Path) -> Path:
    """A dg project of two studies: ``layouts`` (a samplesheet of h5ad, 10x and text
    layouts, min_cells 50) and ``geo`` (a scanned folder of GEO files, one of them cut off).
    The default study's ``data/`` folder holds only another study's folder: no samples."""
    (root / "labstudies" / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "labstudies" / "__init__.py").write_text("")
    (root / "labstudies" / "defs" / "__init__.py").write_text("")
    (root / "labstudies" / "definitions.py").write_text(DEFINITIONS)
    write_layout_study(
        root / "studies" / "layouts",
        scale=0.012,
        layouts=("cellranger_h5", "mtx_v3", "h5ad_layer", "geo_csv"),
    )
    write_demo_series(root / "studies" / "geo", scale=0.02, samples=3, workers=1)
    (root / "data" / "elsewhere").mkdir(parents=True)  # not a sample: ignored
    good = (root / "studies" / "geo" / "GSM5320461_Ctrl3_count_matrix.csv.gz").read_bytes()
    cut = root / "studies" / "geo" / "GSM5320462_Ctrl4_count_matrix.csv.gz"
    cut.write_bytes(good[: len(good) // 2])
    write_study(
        root,
        "layouts",
        {
            "name": "layouts",
            "samplesheet": "studies/layouts/samplesheet.csv",
            "thresholds": {"min_cells": 50, "max_cells": 5000, "min_zero_fraction": 0.8},
        },
    )
    write_study(root, "geo", {"name": "geo", "data_dir": "studies/geo", "storage_prefix": "gse"})
    return root


def run(
    *args: str, cwd: Path, home: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``args`` run as a user in ``cwd``, with its Dagster home (``cwd/.dagster_home``, or
    ``home``) made as sc-assets makes one (telemetry off)."""
    home = ensure_dagster_home(home or cwd / ".dagster_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SC_ASSETS_")}
    env.update(DAGSTER_HOME=str(home), PYTHONPATH=str(cwd))
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def sc_assets(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "sc_assets.cli", *args, cwd=cwd)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    project = make_project(tmp_path_factory.mktemp("labstudies"))
    return project, sc_assets("ingest", "--workers", "2", cwd=project)


def test_both_studies_ingest_and_a_bad_sample_blocks_only_its_own(ingested):
    project, result = ingested
    assert result.returncode == 1, result.stdout + result.stderr  # geo has a cut-off file
    out = result.stdout
    # the default study has no samples here: said, not an error (and not an empty merge)
    assert f"study default:\n  skipped: no samples in {project / 'data'} yet\n" in out
    layouts = out.split("study layouts:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in layouts[1:]] == [
        "cellranger_h5", "geo_csv", "h5ad_layer", "mtx_v3", "merged_adata",
    ]  # fmt: skip
    assert all(line.rstrip().endswith("ok") for line in layouts[1:])
    geo = out.split("study geo:\n")[1].split("\n\n")[0]
    assert "GSM5320462_Ctrl4" in geo and "ERROR: " in geo
    assert "merged_adata" in geo and "cannot enter the merge" in geo

    # each study's files under its own storage prefix; the merge equals anndata.concat
    storage = project / "storage"
    assert sorted(p.name for p in (storage / "layouts" / "sample_adata").iterdir()) == [
        "cellranger_h5.h5ad", "geo_csv.h5ad", "h5ad_layer.h5ad", "mtx_v3.h5ad",
    ]  # fmt: skip
    assert sorted(p.name for p in (storage / "gse" / "sample_adata").iterdir()) == [
        "GSM5320459_Ctrl1.h5ad", "GSM5320460_Ctrl2.h5ad", "GSM5320461_Ctrl3.h5ad",
    ]  # fmt: skip
    assert not (storage / "gse" / "merged_adata.h5ad").exists()
    merged = ad.read_h5ad(storage / "layouts" / "merged_adata.h5ad")
    sheet = read_samplesheet(project / "studies" / "layouts" / "samplesheet.csv")
    parts = {spec.sample: read_sample(spec) for spec in sheet.specs}
    expected = ad.concat(dict(sorted(parts.items())), label="sample", index_unique="-")
    assert merged.n_obs == expected.n_obs == sum(p.n_obs for p in parts.values())
    assert (merged.X != expected.X).nnz == 0
    names = [f"{key}-{name}" for key, part in sorted(parts.items()) for name in part.obs_names]
    assert list(merged.obs_names) == names  # <sample>-<barcode>
    assert np.array_equal(merged.layers["counts"].toarray(), expected.X.toarray())


def test_each_study_has_its_own_partitions_checks_and_thresholds(ingested):
    project, _ = ingested
    with DagsterInstance.from_config(str(project / ".dagster_home")) as instance:
        assert sorted(instance.get_dynamic_partitions("layouts_samples")) == [
            "cellranger_h5", "geo_csv", "h5ad_layer", "mtx_v3",
        ]  # fmt: skip
        assert sorted(instance.get_dynamic_partitions("geo_samples")) == [
            "GSM5320459_Ctrl1", "GSM5320460_Ctrl2", "GSM5320461_Ctrl3", "GSM5320462_Ctrl4",
        ]  # fmt: skip
        assert instance.get_dynamic_partitions("samples") == []  # the default study's
        from sc_assets.sample_status import latest_check_evaluations

        thresholds = {}
        for study, sample in [("layouts", "mtx_v3"), ("geo", "GSM5320459_Ctrl1")]:
            found = latest_check_evaluations(
                instance, AssetKey([study, "sample_adata"]), ["cell_count"], sample
            )
            metadata = found["cell_count"].metadata
            thresholds[study] = (metadata["min_cells"].value, metadata["max_cells"].value)
        assert thresholds == {"layouts": ("50", "5000"), "geo": ("100", "100000")}
        assert instance.get_latest_materialization_event(AssetKey("merged_adata")) is None


def test_studies_lists_samples_and_last_merge(ingested):
    project, _ = ingested
    result = sc_assets("studies", cwd=project)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert list(rows) == ["default", "geo", "layouts"]  # declared ones by folder
    assert rows["layouts"][1] == str(project / "studies" / "layouts" / "samplesheet.csv")
    assert rows["layouts"][2] == str(project / "storage" / "layouts")
    assert rows["layouts"][3] == "4" and rows["layouts"][4] != "never"
    assert rows["geo"][2:5] == [str(project / "storage" / "gse"), "4", "never"]
    assert rows["default"][3:] == ["0", "never"]


def test_ingest_one_study_and_report_each(ingested, tmp_path):
    project, _ = ingested
    again = sc_assets("ingest", "--study", "layouts", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[0].split()[0] == "sample"  # one study: today's table
    assert again.stdout.splitlines()[-1].startswith("merged_adata")

    refused = sc_assets("ingest", "--study", "nope", cwd=project)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "sc-assets: --study nope: no such study (the studies are: default, geo, layouts)"
    )
    flags = sc_assets("ingest", "--study", "geo", "--data-dir", "elsewhere", cwd=project)
    assert flags.returncode == 2 and "--data-dir configures the default study" in flags.stderr

    report = sc_assets("report", "--out", str(tmp_path / "reports"), cwd=project)
    assert report.returncode == 1  # geo's merge never ran
    assert (tmp_path / "reports" / "layouts" / "report.md").is_file()
    assert "GSM5320462_Ctrl4" in (tmp_path / "reports" / "geo" / "report.md").read_text()
    assert "study default: no samples yet" not in report.stdout  # the default study: as today


def test_dg_sees_the_studies_as_groups(ingested):
    project, _ = ingested
    result = run(DG, "list", "defs", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    listed = yaml.safe_load(result.stdout)
    groups = {asset["asset_key"]: asset["group_name"] for asset in listed["assets"]}
    assert groups["layouts/sample_adata"] == "layouts"
    assert groups["geo/merged_adata"] == "geo"
    assert groups["sample_adata"] == "single_cell"  # the default study, as before
    checked = run(DG, "check", "defs", cwd=project)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("attributes", "attribute", "problem"),
    [
        ({"name": "Bad-Name", "data_dir": "data/x"}, "attributes.name", "should match pattern"),
        ({"data_dir": "data/x"}, "attributes", "'name' is a required property"),
        (
            {"name": "x", "data_dir": "d", "thresholds": {"min_cels": 5}},
            "attributes.thresholds {'min_cels': 5}",
            "is not valid",
        ),
        ({"name": "x", "samplesheet": "data/none.csv"}, "samplesheet", "does not exist"),
        ({"name": "layouts", "data_dir": "data/x"}, "name", "is also the name in"),
        ({"name": "x", "data_dir": "d", "storage_prefix": "gse"}, "storage_prefix", "also the"),
        ({"name": "x", "data_dir": "d", "samplesheet": "s.csv"}, "samplesheet/data_dir", "one of"),
        ({"name": "default", "data_dir": "d"}, "name", "environment-configured"),
    ],
)
def test_a_bad_defs_yaml_fails_dg_check_naming_the_file_and_attribute(
    ingested, tmp_path, attributes, attribute, problem
):
    project = tmp_path / "copy"
    shutil.copytree(ingested[0], project, ignore=shutil.ignore_patterns("studies", "storage", ".*"))
    shutil.copytree(ingested[0] / "studies" / "layouts", project / "studies" / "layouts")
    bad = write_study(project, "zz_bad", attributes)
    result = run(DG, "check", "defs", cwd=project)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert str(bad) in output and attribute in output and problem in output
    # the code location load says the same, and the CLI in one line without a traceback
    studies = sc_assets("studies", cwd=project)
    assert studies.returncode == 2 and "Traceback" not in studies.stderr
    assert studies.stderr.startswith("sc-assets: the studies cannot be loaded: ")
    assert str(bad) in studies.stderr and len(studies.stderr.strip().splitlines()) == 1


def test_dg_scaffold_writes_a_study_that_loads(tmp_path):
    project = tmp_path / "proj"
    (project / "labstudies" / "defs").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "labstudies" / "__init__.py").write_text("")
    (project / "labstudies" / "defs" / "__init__.py").write_text("")
    (project / "labstudies" / "definitions.py").write_text(DEFINITIONS)
    made = run(DG, "scaffold", "defs", "ScRnaSeqStudy", "pbmc", cwd=project)  # short name
    assert made.returncode == 0, made.stdout + made.stderr
    declared = yaml.safe_load((project / "labstudies/defs/pbmc/defs.yaml").read_text())
    assert declared["type"] == "sc_assets.ScRnaSeqStudy"
    assert declared["attributes"]["name"] == "pbmc"
    assert declared["attributes"]["data_dir"] == "data/pbmc"
    listed = run(DG, "list", "defs", "--json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    keys = {asset["asset_key"] for asset in yaml.safe_load(listed.stdout)["assets"]}
    assert {"pbmc/sample_adata", "pbmc/merged_adata", "sample_adata"} <= keys


def test_this_project_is_a_dg_project_of_the_default_study(tmp_path):
    result = run(DG, "check", "defs", cwd=PROJECT_ROOT, home=tmp_path / "home")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_launch_one_partition_of_a_study_with_dg(ingested):
    project, _ = ingested
    result = run(
        DG, "launch", "--assets", "layouts/sample_adata", "--partition", "mtx_v3", cwd=project
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with DagsterInstance.from_config(str(project / ".dagster_home")) as instance:
        records = instance.fetch_materializations(AssetKey(["layouts", "sample_adata"]), limit=1)
        assert records.records[0].partition_key == "mtx_v3"
