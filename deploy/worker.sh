#!/usr/bin/env bash
# Start a Celery worker that executes sc-assets runs (deploy/README.md).
#
#   DAGSTER_CELERY_QUEUES       queues to serve, comma-separated (default: dagster, where every
#                               run goes unless tagged; `merge` on the big-disk host)
#   DAGSTER_CELERY_CONCURRENCY  runs at once (default: Celery's, the number of cores)
#   SC_ASSETS_VENV              the environment sc-assets is installed in (default: .venv here)
#
# Also needs what every sc-assets process needs: DAGSTER_HOME (a folder holding
# deploy/dagster.yaml as dagster.yaml), DAGSTER_POSTGRES_URL, DAGSTER_CELERY_BROKER_URL,
# DAGSTER_CELERY_BACKEND_URL, the AWS_* variables, the DAGSTER_COMPUTE_LOG_* ones and the same
# SC_ASSETS_* values as the code server (the run imports the code location here).
set -euo pipefail

deploy_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project_dir="$(dirname "$deploy_dir")"

if [[ -z "${DAGSTER_HOME:-}" || ! -f "${DAGSTER_HOME}/dagster.yaml" ]]; then
    echo "worker.sh: DAGSTER_HOME must be a folder holding deploy/dagster.yaml as dagster.yaml" \
        "(DAGSTER_HOME=${DAGSTER_HOME:-unset})" >&2
    exit 2
fi

queues="${DAGSTER_CELERY_QUEUES:-dagster}"
queues="${queues//[[:space:]]/}"
queues="$(tr -s ',' <<<"$queues")"
queues="${queues#,}"
queues="${queues%,}"
if [[ -z "$queues" ]]; then
    echo "worker.sh: DAGSTER_CELERY_QUEUES names no queue" >&2
    exit 2
fi

# Options after `--` go to `celery worker` itself. The queues are given there, as one
# comma-separated -Q: dagster-celery's own `-q a -q b` becomes `-Q a -Q b`, of which Celery 5
# keeps only the last. One run per process, then a fresh one (as on one machine): a big
# merge's memory goes back to the system, and each run imports the code installed now.
celery_args=(-Q "$queues" --max-tasks-per-child=1)
if [[ -n "${DAGSTER_CELERY_CONCURRENCY:-}" ]]; then
    celery_args+=("--concurrency=${DAGSTER_CELERY_CONCURRENCY}")
fi

# dagster-celery starts `celery` from PATH: put the project's environment first. Relative
# SC_ASSETS_* paths resolve against the project folder, as for the code server.
export PATH="${SC_ASSETS_VENV:-$project_dir/.venv}/bin:$PATH"
cd "$project_dir"
exec dagster-celery worker start -A dagster_celery.app -y "$deploy_dir/celery.yaml" \
    -- "${celery_args[@]}"
