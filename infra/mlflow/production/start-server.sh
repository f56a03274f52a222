#!/bin/sh
# Render basic_auth.ini (its ${VARS} come from the environment, so no secret is written in the
# repository) and start MLflow with PostgreSQL runs/registry, proxied S3 artifacts and basic auth.
set -eu
python - <<'PY'
import os, pathlib
template = pathlib.Path("/etc/mlflow/basic_auth.ini").read_text()
pathlib.Path("/home/mlflow/basic_auth.ini").write_text(os.path.expandvars(template))
PY
export MLFLOW_AUTH_CONFIG_PATH=/home/mlflow/basic_auth.ini
exec mlflow server \
  --app-name basic-auth \
  --backend-store-uri "postgresql+psycopg2://mlflow:${POSTGRES_PASSWORD}@postgres:5432/mlflow" \
  --artifacts-destination "s3://${MLFLOW_BUCKET}/artifacts" \
  --serve-artifacts \
  --host 0.0.0.0 \
  --port 5000 \
  --workers "${MLFLOW_WORKERS:-4}" \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS}" \
  --cors-allowed-origins "${MLFLOW_CORS_ALLOWED_ORIGINS}"
