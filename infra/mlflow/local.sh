#!/usr/bin/env bash
# A local MLflow tracking server for one machine: SQLite backend store, artifacts in a local
# folder served through the server (clients never touch the folder), bound to 127.0.0.1 only.
#
#   infra/mlflow/local.sh                  # data in ./mlflow-server, UI on http://127.0.0.1:5000
#   MLFLOW_DATA=/srv/mlflow MLFLOW_PORT=5001 infra/mlflow/local.sh
#   export MLFLOW_TRACKING_URI=http://127.0.0.1:5000   # then stride train/tune/promote use it
set -euo pipefail

data="$(mkdir -p "${MLFLOW_DATA:-./mlflow-server}" && cd "${MLFLOW_DATA:-./mlflow-server}" && pwd)"
port="${MLFLOW_PORT:-5000}"
mkdir -p "$data/artifacts"
echo "MLflow: backend sqlite:///$data/mlflow.db, artifacts $data/artifacts, UI http://127.0.0.1:$port" >&2
exec mlflow server \
  --backend-store-uri "sqlite:///$data/mlflow.db" \
  --artifacts-destination "$data/artifacts" \
  --serve-artifacts \
  --host 127.0.0.1 \
  --port "$port" \
  --workers "${MLFLOW_WORKERS:-1}"
