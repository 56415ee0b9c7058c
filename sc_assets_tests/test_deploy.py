"""deploy/: the instance configs, the worker command and the Helm values a team deploys.

Each file is checked by the code that reads it in production: Dagster's instance validation,
each configurable class's own ``config_type()`` (then the class is built from it where that
needs no network), dagster-celery's worker CLI, and the chart's key mapping onto
K8sRunLauncher's schema. Nothing here contacts a broker, a database or a cluster; the S3 API
is the suite's loopback moto server.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from dagster._check import CheckError
from dagster._config import process_config, resolve_to_config_type
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.launcher import LaunchRunContext, WorkerStatus
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.compute_log_manager import ComputeIOType
from dagster._serdes import ConfigurableClassData
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_celery.cli import get_config_dir, get_validated_config
from dagster_celery.defaults import task_default_queue
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG, DAGSTER_CELERY_TASK_ID_TAG
from dagster_k8s import K8sRunLauncher
from dagster_postgres import DagsterPostgresStorage

from sc_assets.celery_launcher import MonitoredCeleryRunLauncher

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
CELERY_INSTANCE = DEPLOY / "dagster.yaml"
K8S_INSTANCE = DEPLOY / "k8s" / "dagster.yaml"
CELERY_WORKER = DEPLOY / "celery.yaml"
HELM_VALUES = DEPLOY / "k8s" / "values.yaml"
WORKER_SH = DEPLOY / "worker.sh"

#: What a team sets, in the forms deploy/README.md documents. The S3 endpoint is a closed
#: loopback port: building the classes must not contact it.
SAMPLE_ENV = {
    "DAGSTER_POSTGRES_URL": "postgresql+psycopg2://dagster:pw@db.example:5432/dagster",
    "DAGSTER_CELERY_BROKER_URL": "pyamqp://dagster:pw@rabbitmq.example:5672//",
    "DAGSTER_CELERY_BACKEND_URL": "db+postgresql+psycopg2://dagster:pw@db.example:5432/dagster",
    "DAGSTER_COMPUTE_LOG_BUCKET": "sc-assets-logs",
    "DAGSTER_COMPUTE_LOG_PREFIX": "dagster-compute-logs",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def sample_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in SAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    return SAMPLE_ENV


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig naming a cluster nobody runs: enough to build K8sRunLauncher offline."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


# --- the checks, shared by the tests of the real files and of broken copies -------------------


def validated_instance(path: Path) -> Mapping[str, Any]:
    """``path`` through Dagster's own instance validation (what ``DagsterInstance.get()`` does
    first); raises DagsterInvalidConfigError."""
    config, _ = dagster_instance_config(str(path.parent), path.name)
    return config


def build(section: Mapping[str, Any], **overrides: Any) -> Any:
    """The configurable class a ``module``/``class``/``config`` section names, validated
    against its own ``config_type()`` (env vars resolved) and built, as the instance does."""
    config = {**(section.get("config") or {}), **overrides}
    data = ConfigurableClassData(section["module"], section["class"], yaml.safe_dump(config))
    return data.rehydrate()


def postgres_storage(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``storage: postgres`` section validated against DagsterPostgresStorage's schema.
    Not built: the storage connects to its database to create its tables."""
    result = process_config(
        resolve_to_config_type(DagsterPostgresStorage.config_type()), config["storage"]["postgres"]
    )
    if not result.success:
        raise DagsterInvalidConfigError("storage.postgres", result.errors, config["storage"])
    return result.value


def check_instance_file(path: Path, kubeconfig: Path) -> dict[str, Any]:
    """Every section of a deploy dagster.yaml validated, and every class built."""
    config = validated_instance(path)
    launcher_overrides = {}
    if config["run_launcher"]["class"] == "K8sRunLauncher":
        # In a pod it reads the cluster's service account; here a kubeconfig file, no network.
        launcher_overrides = {"load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    return {
        "config": config,
        "storage": postgres_storage(config),
        "launcher": build(config["run_launcher"], **launcher_overrides),
        "coordinator": build(config["run_coordinator"]),
        "compute_logs": build(config["compute_logs"]),
    }


def camel_to_snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def snake_keys(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {camel_to_snake(key): value for key, value in mapping.items()}


def render_chart_instance(values: Mapping[str, Any]) -> dict[str, Any]:
    """The dagster.yaml sections the chart's configmap-instance.yaml renders from ``values``.

    Its templates map each camelCase key onto the snake_case field of the same name; only the
    launcher's image and env sources change shape. A key the chart does not know becomes a
    field Dagster rejects, as the chart's own schema would."""
    daemon = values["dagsterDaemon"]
    k8s_values = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher = {  # what the chart fills in itself
        "service_account_name": "sc-assets-dagster",
        "instance_config_map": "sc-assets-dagster-instance",
        "dagster_home": "/opt/dagster/dagster_home",
        "postgres_password_secret": "dagster-postgresql-secret",
        "job_namespace": "sc-assets",
    }
    for key, value in k8s_values.items():
        if key in ("envSecrets", "envConfigMaps"):
            value = [source["name"] for source in value]
        elif key == "runK8sConfig":
            value = snake_keys(value)
        elif key == "image":
            key, value = "jobImage", f"{value['repository']}:{value['tag']}"
        launcher[camel_to_snake(key)] = value
    pg = values["postgresql"]
    coordinator = daemon["runCoordinator"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    return {
        "telemetry": values["telemetry"],
        "storage": {
            "postgres": {
                "postgres_db": {
                    "username": pg["postgresqlUsername"],
                    "password": {"env": "DAGSTER_PG_PASSWORD"},
                    "hostname": pg["postgresqlHost"],
                    "db_name": pg["postgresqlDatabase"],
                    "port": pg["service"]["port"],
                }
            }
        },
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": snake_keys(coordinator["config"]["queuedRunCoordinator"]),
        },
        "compute_logs": {
            "module": "dagster_aws.s3.compute_log_manager",
            "class": "S3ComputeLogManager",
            "config": snake_keys(values["computeLogManager"]["config"]["s3ComputeLogManager"]),
        },
        "run_monitoring": snake_keys(daemon["runMonitoring"]),
        "run_retries": snake_keys(daemon["runRetries"]),
    }


def check_helm_values(path: Path, tmp_path: Path, kubeconfig: Path) -> dict[str, Any]:
    """The instance the chart renders from ``path``, checked like the deploy dagster.yaml."""
    values = yaml.safe_load(path.read_text())
    rendered = tmp_path / "rendered" / "dagster.yaml"
    rendered.parent.mkdir(exist_ok=True)
    rendered.write_text(yaml.safe_dump(render_chart_instance(values)))
    return {"values": values, **check_instance_file(rendered, kubeconfig)}


def check_worker_config(path: Path) -> Mapping[str, Any]:
    """The worker's -y file through the same validation `dagster-celery worker start` runs."""
    return get_validated_config(str(path))


# --- the real files ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CELERY_INSTANCE, K8S_INSTANCE], ids=["celery", "k8s"])
def test_instance_files_pass_dagster_validation(path, sample_env, kubeconfig):
    built = check_instance_file(path, kubeconfig)
    config = built["config"]
    assert config["telemetry"] == {"enabled": False}
    assert built["storage"]["postgres_url"] == sample_env["DAGSTER_POSTGRES_URL"]
    coordinator = built["coordinator"]
    assert isinstance(coordinator, QueuedRunCoordinator)
    # One merge at a time, keyed on the tag that routes a run to the merge worker.
    assert {"key": DAGSTER_CELERY_QUEUE_TAG, "value": "merge", "limit": 1} in (
        config["run_coordinator"]["config"]["tag_concurrency_limits"]
    )
    logs = built["compute_logs"]
    assert isinstance(logs, S3ComputeLogManager)
    assert logs._s3_session.meta.endpoint_url == sample_env["AWS_ENDPOINT_URL"]  # noqa: SLF001
    assert logs._s3_bucket == sample_env["DAGSTER_COMPUTE_LOG_BUCKET"]  # noqa: SLF001
    assert logs.upload_interval  # partial logs of a run whose worker vanished
    assert config["run_retries"] == {
        "enabled": True,
        "max_retries": 2,
        "retry_on_asset_or_op_failure": False,  # a failed check fails the same way again
    }


def test_celery_launcher_is_built_from_the_environment(sample_env, kubeconfig):
    launcher = check_instance_file(CELERY_INSTANCE, kubeconfig)["launcher"]
    assert isinstance(launcher, CeleryRunLauncher)
    assert launcher.broker == sample_env["DAGSTER_CELERY_BROKER_URL"]
    assert launcher.backend == sample_env["DAGSTER_CELERY_BACKEND_URL"]
    assert launcher.default_queue == task_default_queue == "dagster"
    # a launch during a broker restart waits for it (dagster-celery alone gives up in ~0.6 s)
    assert launcher.config_source["broker_transport_options"]["max_retries"] == 30
    assert launcher.config_source["task_publish_retry_policy"]["max_retries"] == 30
    # The documented backend loads with the installed packages (SQLAlchemy's psycopg2 dialect:
    # a bare postgresql:// would mean psycopg 3, which is not installed), without connecting.
    from celery.app.backends import by_url
    from celery.backends.database import DatabaseBackend
    from sqlalchemy.engine import make_url

    backend_class, url = by_url(launcher.backend, launcher.celery.loader)
    assert issubclass(backend_class, DatabaseBackend)
    assert make_url(url.removeprefix("db+")).get_dialect().driver == "psycopg2"


def test_k8s_launcher_is_built_offline(sample_env, kubeconfig):
    launcher = check_instance_file(K8S_INSTANCE, kubeconfig)["launcher"]
    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.instance_config_map == "sc-assets-dagster-instance"
    assert launcher.job_namespace == "sc-assets"
    assert "sc-assets-env" in launcher.env_secrets


@pytest.mark.parametrize("path", [CELERY_INSTANCE, K8S_INSTANCE], ids=["celery", "k8s"])
def test_a_lost_worker_fails_its_run_within_a_bound(path, sample_env, kubeconfig):
    built = check_instance_file(path, kubeconfig)
    monitoring = built["config"]["run_monitoring"]
    assert built["launcher"].supports_check_run_worker_health
    assert monitoring["enabled"]
    assert 0 < monitoring["poll_interval_seconds"] <= 30
    assert monitoring["start_timeout_seconds"] > 0  # a run no worker takes
    assert monitoring["max_runtime_seconds"] > 0  # the backstop of a run that never ends
    assert monitoring["max_resume_run_attempts"] == 0  # run_retries relaunch it instead
    if path == CELERY_INSTANCE:
        # A vanished Celery host leaves its task STARTED forever: the launcher's ping check
        # catches it after missed_pings polls, the bound the README states.
        launcher = built["launcher"]
        assert isinstance(launcher, MonitoredCeleryRunLauncher)
        polls, interval = launcher.missed_pings, monitoring["poll_interval_seconds"]
        readme = (DEPLOY / "README.md").read_text()
        assert f"within {polls} x {interval} s + a 2 s ping timeout" in readme


def test_worker_config_names_the_launchers_broker_and_backend(sample_env):
    worker = check_worker_config(CELERY_WORKER)
    assert worker["broker"] == sample_env["DAGSTER_CELERY_BROKER_URL"]
    assert worker["backend"] == sample_env["DAGSTER_CELERY_BACKEND_URL"]
    # Celery's logger in place of stdout would leave Dagster nothing to capture for S3.
    assert worker["config_source"]["worker_redirect_stdouts"] is False


def test_helm_values_map_onto_the_launchers_schema(sample_env, tmp_path, kubeconfig, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "pw")  # the chart's own variable
    built = check_helm_values(HELM_VALUES, tmp_path, kubeconfig)
    assert isinstance(built["launcher"], K8sRunLauncher)
    assert "sc-assets-aws" in built["launcher"].env_secrets

    (deployment,) = built["values"]["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    module = args[args.index("--module-name") + 1]
    assert module == "sc_assets.definitions"
    assert importlib.util.find_spec(module) is not None
    assert deployment["env"]["SC_ASSETS_STORAGE_DIR"].startswith("s3://")

    # The chart path and the plain-manifest path monitor, retry and queue runs alike.
    rendered, plain = built["config"], validated_instance(K8S_INSTANCE)
    for section in ("run_monitoring", "run_retries"):
        assert rendered[section].items() <= plain[section].items(), section
    assert rendered["run_coordinator"]["config"] == plain["run_coordinator"]["config"]


def test_no_run_uses_the_celery_executor():
    """A run executes whole inside its Celery task (or its Job's pod): a celery_executor under
    the CeleryRunLauncher is a known failure. The declared jobs use the in-process executor."""
    from sc_assets.definitions import defs

    jobs = defs.get_repository_def().get_all_jobs()
    assert not [job.name for job in jobs if "celery" in job.executor_def.name]
    declared = [job for job in jobs if not job.name.startswith("__")]
    assert declared
    assert {job.name: job.executor_def.name for job in declared} == {
        job.name: "in_process" for job in declared
    }


# --- broken copies must fail -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "good", "broken"),
    [
        (CELERY_INSTANCE, "poll_interval_seconds", "poll_interval_secs"),
        (CELERY_INSTANCE, "default_queue:", "default_queues:"),
        (CELERY_INSTANCE, "class: QueuedRunCoordinator", "class: QueuedRunCoordinatr"),
        (CELERY_INSTANCE, "      env: AWS_ENDPOINT_URL", "      env_var: AWS_ENDPOINT_URL"),
        (K8S_INSTANCE, "instance_config_map:", "instance_configmap:"),
        (K8S_INSTANCE, "max_retries: 2", "max_retries: two"),
        (CELERY_WORKER, "backend:", "result_backend:"),
        (HELM_VALUES, "loadInclusterConfig", "loadInClusterConfig"),
        (HELM_VALUES, "pollIntervalSeconds", "pollIntervalSecond"),
        (HELM_VALUES, "maxConcurrentRuns", "maxConcurrentRun"),
    ],
)
def test_a_broken_copy_is_rejected(
    path, good, broken, sample_env, tmp_path, kubeconfig, monkeypatch
):
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "pw")  # the chart's own variable
    text = path.read_text()
    assert good in text
    copy = tmp_path / path.name
    copy.write_text(text.replace(good, broken))
    check_deploy_file(path, path, tmp_path, kubeconfig)  # the real file passes the same check
    with pytest.raises((DagsterInvalidConfigError, CheckError)):
        check_deploy_file(path, copy, tmp_path, kubeconfig)


def check_deploy_file(original: Path, path: Path, tmp_path: Path, kubeconfig: Path) -> Any:
    """``path`` (``original`` or a copy of it) through the checks of that kind of file."""
    if original == HELM_VALUES:
        return check_helm_values(path, tmp_path, kubeconfig)
    if original == CELERY_WORKER:
        return check_worker_config(path)
    return check_instance_file(path, kubeconfig)


def test_every_variable_the_files_read_is_documented():
    readme = (DEPLOY / "README.md").read_text()
    for path in (CELERY_INSTANCE, K8S_INSTANCE, CELERY_WORKER, HELM_VALUES):
        for name in re.findall(r"env: (\w+)", path.read_text()):
            assert f"`{name}`" in readme, f"{name} ({path.name}) is not in deploy/README.md"


# --- the Celery path end to end, without a broker server ---------------------------------------


def test_a_merge_run_reaches_the_merge_worker_and_its_health_is_read_back(
    sample_env, tmp_path, monkeypatch, bucket
):
    """deploy/dagster.yaml as an instance (SQLite instead of PostgreSQL, which needs a server;
    Celery's in-memory broker and a SQLite result backend, which need none): a run tagged
    `dagster-celery/queue: merge` is sent to the queue a `worker.sh` with
    DAGSTER_CELERY_QUEUES=merge serves; the task states a worker built from deploy/celery.yaml
    writes are what the run monitor reads; compute logs go to the S3 API and come back."""
    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "memory://")
    monkeypatch.setenv("DAGSTER_CELERY_BACKEND_URL", f"db+sqlite:///{tmp_path / 'results.db'}")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_BUCKET", bucket.name)
    home = tmp_path / "home"
    home.mkdir()
    config = yaml.safe_load(CELERY_INSTANCE.read_text())
    config["storage"] = {"sqlite": {"base_dir": str(home)}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled and instance.run_retries_max_retries == 2
        launcher = instance.run_launcher
        assert isinstance(launcher, CeleryRunLauncher)

        origin = JobPythonOrigin(
            "merge_samples",
            RepositoryPythonOrigin(
                sys.executable, ModuleCodePointer("sc_assets.definitions", "defs", None)
            ),
        )
        run = instance.add_run(
            DagsterRun(
                job_name="merge_samples",
                status=DagsterRunStatus.STARTING,
                tags={DAGSTER_CELERY_QUEUE_TAG: "merge"},
                job_code_origin=origin,
            )
        )
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        run = instance.get_run_by_id(run.run_id)
        task_id = run.tags[DAGSTER_CELERY_TASK_ID_TAG]

        # The worker's side, as `dagster-celery worker start -A dagster_celery.app
        # -y deploy/celery.yaml -q merge` builds it: the CLI writes the Celery settings module
        # that dagster_celery.app's make_app() imports.
        from dagster_celery.make_app import make_app

        monkeypatch.syspath_prepend(get_config_dir(str(CELERY_WORKER)))
        sys.modules.pop("dagster_celery_config", None)
        worker = make_app()
        assert worker.conf.worker_redirect_stdouts is False
        with worker.connection_for_read() as conn:
            with conn.SimpleQueue(worker.amqp.queues["merge"]) as merge_queue:
                message = merge_queue.get(timeout=5)
                assert message.headers["task"] == "execute_job"
                assert message.headers["id"] == task_id
                message.ack()
            with conn.SimpleQueue(worker.amqp.queues["dagster"]) as default_queue:
                assert default_queue.qsize() == 0

        # Nobody has taken it yet: neither running nor done.
        assert launcher.check_run_worker_health(run).status == WorkerStatus.UNKNOWN
        worker.backend.store_result(task_id, None, "STARTED")
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
        # What the worker records when the process running the task is killed.
        from billiard.exceptions import WorkerLostError

        worker.backend.mark_as_failure(task_id, WorkerLostError("signal 9 (SIGKILL)"))
        assert launcher.check_run_worker_health(run).status == WorkerStatus.FAILED

        logs = instance.compute_log_manager
        log_key = [run.run_id, "compute_logs", "merged_adata"]
        with logs.open_log_stream(log_key, ComputeIOType.STDOUT) as stream:
            stream.write("merged 12 samples\n")
        assert logs.is_capture_complete(log_key)
        assert logs.get_log_data(log_key).stdout == b"merged 12 samples\n"
    sys.modules.pop("dagster_celery_config", None)


# --- the worker command ------------------------------------------------------------------------


def run_worker_sh(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """deploy/worker.sh with a stand-in dagster-celery that prints how it was called."""
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True, exist_ok=True)
    stub = venv_bin / "dagster-celery"
    stub.write_text('#!/bin/sh\necho "$PWD"\necho "$@"\n')
    stub.chmod(0o755)
    base = {"PATH": os.environ["PATH"], "SC_ASSETS_VENV": str(tmp_path / "venv")}
    return subprocess.run(
        ["bash", str(WORKER_SH)], env={**base, **env}, capture_output=True, text=True
    )


def test_worker_script_is_valid_bash_and_executable():
    assert os.access(WORKER_SH, os.X_OK)
    subprocess.run(["bash", "-n", str(WORKER_SH)], check=True)
    text = WORKER_SH.read_text()
    assert "set -euo pipefail" in text and "DAGSTER_CELERY_QUEUES" in text


@pytest.mark.parametrize(
    ("queues", "expected"),
    [(None, "dagster"), ("merge", "merge"), ("dagster, merge", "dagster,merge"), ("a,,b,", "a,b")],
)
def test_worker_script_serves_the_queues_it_is_given(queues, expected, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(CELERY_INSTANCE.read_text())
    env = {"DAGSTER_HOME": str(home), "DAGSTER_CELERY_CONCURRENCY": "2"}
    if queues is not None:
        env["DAGSTER_CELERY_QUEUES"] = queues
    result = run_worker_sh(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    cwd, args = result.stdout.splitlines()
    assert cwd == str(DEPLOY.parent)  # relative SC_ASSETS_* paths resolve as on the code server
    assert args == (
        f"worker start -A dagster_celery.app -y {CELERY_WORKER} "
        f"-- -Q {expected} --max-tasks-per-child=1 --concurrency=2"
    )


def test_worker_script_refuses_without_an_instance(tmp_path):
    result = run_worker_sh(tmp_path, DAGSTER_HOME=str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "DAGSTER_HOME" in result.stderr and not result.stdout
