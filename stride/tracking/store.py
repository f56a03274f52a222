"""Resolving and checking the MLflow tracking store.

Default: an embedded local store in the working directory (SQLite `mlruns.db` plus an
`mlartifacts/` folder), so nothing needs a server. `--tracking-uri` or
`MLFLOW_TRACKING_URI` point elsewhere, e.g. a team server.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from stride.errors import StrideError

LOCAL_DB = "mlruns.db"
LOCAL_ARTIFACTS = "mlartifacts"


def resolve_tracking_uri(explicit: str | None = None, workdir: str | Path | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(workdir or Path.cwd()).absolute() / LOCAL_DB}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:")


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if is_local_store(uri):
        artifacts = Path(uri.removeprefix("sqlite:///")).parent / LOCAL_ARTIFACTS
        return (f"mlflow ui --backend-store-uri {uri} --default-artifact-root {artifacts.as_uri()} "
                "--host 127.0.0.1 --port 5000")
    return f"open {uri} in a browser"


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """Fail fast, before any training, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        if not uri.startswith(("sqlite:", "file:", "postgresql", "mysql", "databricks")) and "://" in uri:
            raise StrideError(f"tracking URI {uri!r}: unsupported scheme (use http(s)://, sqlite:///, file://)")
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            if response.status != 200:
                raise StrideError(f"MLflow server {uri} answered /health with HTTP {response.status}")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise StrideError(f"MLflow tracking server {uri} is unreachable ({reason}); start it or pass another "
                          "--tracking-uri") from None


def use_store(uri: str, experiment: str) -> str:
    """Point mlflow at `uri`, create `experiment` if needed (local artifacts beside the DB); return its id."""
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        location = None
        if is_local_store(uri):
            location = (Path(uri.removeprefix("sqlite:///")).parent / LOCAL_ARTIFACTS).as_uri()
        try:
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        except mlflow.exceptions.MlflowException:  # created concurrently by another process
            experiment_id = client.get_experiment_by_name(experiment).experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
