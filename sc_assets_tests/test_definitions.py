"""The whole code location loads, and its public names stay what users rely on."""

import importlib
import re
import subprocess
import sys

from dagster import AssetKey, DefaultScheduleStatus, DefaultSensorStatus

EXPECTED_CHECKS = {
    "sample_adata": [
        "cell_count",
        "gene_set",
        "sparsity",
        "count_integrity",
        "empty_cells",
        "mt_genes",
    ],
    "merged_adata": [
        "cell_count",
        "gene_set",
        "sparsity",
        "counts_layer",
        "unique_obs_names",
        "protein_panel",
    ],
}


def test_the_module_dagster_loads_has_one_definitions_object():
    module = importlib.import_module("sc_assets.definitions")
    module.defs.validate_loadable(module.defs)


def test_asset_and_check_names_snapshot(defs):
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "raw_count_matrix",
        "reference_genes",
        "sample_adata",
        "merged_adata",
    }
    checks: dict[str, list[str]] = {}
    for check_key in graph.asset_check_keys:
        checks.setdefault(check_key.asset_key.to_user_string(), []).append(check_key.name)
    assert {k: sorted(v) for k, v in checks.items()} == {
        k: sorted(v) for k, v in EXPECTED_CHECKS.items()
    }


def test_partitions_and_dependencies(defs):
    graph = defs.resolve_asset_graph()
    sample = graph.get(AssetKey("sample_adata"))
    assert sample.partitions_def.name == "samples"
    assert graph.get(AssetKey("raw_count_matrix")).partitions_def.name == "samples"
    assert graph.get(AssetKey("merged_adata")).partitions_def is None
    assert set(sample.parent_keys) == {AssetKey("raw_count_matrix"), AssetKey("reference_genes")}
    assert set(graph.get(AssetKey("merged_adata")).parent_keys) == {AssetKey("sample_adata")}


def test_every_asset_and_check_explains_itself(defs):
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and len(node.description) > 40, key
        assert node.kinds, key
        assert node.group_name == "single_cell", key
        assert node.owners == ["team:single-cell"], key
        assert node.tags["domain"] == "scrna-seq", key
        assert_markdown_safe(node.description)
    for asset in ["sample_adata", "merged_adata"]:
        for spec in defs.resolve_assets_def(asset).check_specs:
            assert spec.description.startswith(("[ERROR]", "[WARN]")), spec.name
            assert spec.blocking == spec.description.startswith("[ERROR]"), spec.name
            assert_markdown_safe(spec.description)


def assert_markdown_safe(text: str) -> None:
    """The UI renders descriptions as Markdown: a bare <word> would vanish as an HTML tag."""
    outside_code = re.sub(r"`[^`]*`", "", text)
    assert "<" not in outside_code, text


def test_automation_is_on_by_default(defs):
    sensors = {sensor.name: sensor for sensor in defs.sensors}
    assert set(sensors) == {"new_samples_sensor", "merge_automation_sensor"}
    assert all(s.default_status == DefaultSensorStatus.RUNNING for s in sensors.values())
    assert sensors["new_samples_sensor"].minimum_interval_seconds == 30
    (schedule,) = defs.schedules
    assert schedule.name == "nightly_reingest"
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    merged = defs.resolve_asset_graph().get(AssetKey("merged_adata"))
    assert "tolerating missing samples" in str(merged.automation_condition.get_label())


def test_every_merge_run_goes_to_the_merge_queue_of_celery_workers(defs):
    queue = {"dagster-celery/queue": "merge"}
    assert defs.resolve_job_def("merge_samples").tags.items() >= queue.items()
    sensors = {sensor.name: sensor for sensor in defs.sensors}
    assert sensors["merge_automation_sensor"].run_tags == queue
    # sample runs stay on the default queue
    assert "dagster-celery/queue" not in defs.resolve_job_def("ingest_sample").tags


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    from sc_assets.definitions import build_definitions
    from sc_assets.settings import Settings

    monkeypatch.setenv("SC_ASSETS_SENSOR_INTERVAL", "5")
    monkeypatch.setenv("SC_ASSETS_REINGEST_CRON", "30 3 * * *")
    monkeypatch.setenv("SC_ASSETS_MIN_CELLS", "10")
    settings = Settings.from_env()
    assert settings.thresholds.min_cells == 10
    defs = build_definitions(settings)
    assert {s.name: s.minimum_interval_seconds for s in defs.sensors}["new_samples_sensor"] == 5
    assert defs.schedules[0].cron_schedule == "30 3 * * *"


def test_the_core_does_not_import_dagster():
    code = (
        "import sys, sc_assets.core, sc_assets.core.validation, sc_assets.core.inbox, "
        "sc_assets.core.report; "
        "print(any(m == 'dagster' or m.startswith('dagster.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
