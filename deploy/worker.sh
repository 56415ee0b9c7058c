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

queue_args=()
IFS=',' read -ra queues <<<"${DAGSTER_CELERY_QUEUES:-dagster}"
for queue in "${queues[@]}"; do
    queue="${queue//[[:space:]]/}"
    [[ -n "$queue" ]] && queue_args+=(-q "$queue")
done
if [[ ${#queue_args[@]} -eq 0 ]]; then
    echo "worker.sh: DAGSTER_CELERY_QUEUES names no queue" >&2
    exit 2
fi

# Options after `--` go to `celery worker` itself. One run per process, then a fresh one
# (as on one machine): a big merge's memory goes back to the system, and each run imports
# the code installed now.
celery_args=(--max-tasks-per-child=1)
if [[ -n "${DAGSTER_CELERY_CONCURRENCY:-}" ]]; then
    celery_args+=("--concurrency=${DAGSTER_CELERY_CONCURRENCY}")
fi

# dagster-celery starts `celery` from PATH: put the project's environment first. Relative
# SC_ASSETS_* paths resolve against the project folder, as for the code server.
export PATH="${SC_ASSETS_VENV:-$project_dir/.venv}/bin:$PATH"
cd "$project_dir"
exec dagster-celery worker start -A dagster_celery.app -y "$deploy_dir/celery.yaml" \
    "${queue_args[@]}" -- "${celery_args[@]}"
