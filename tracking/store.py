"""Resolving and checking the MLflow tracking store.

Default: an embedded local store in the working directory (SQLite `mlruns.db` plus an
`mlartifacts/` folder), so nothing needs a server. `--tracking-uri` or
`MLFLOW_TRACKING_URI` point elsewhere, e.g. a team server.
"""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
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


def is_file_store(uri: str) -> bool:
    """A folder of run files (`file:` URI or a plain path), MLflow's old store."""
    return uri.startswith("file:") or "://" not in uri and not uri.startswith(("sqlite:", "databricks"))


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:")


LOCAL_UI = "http://127.0.0.1:5000"  # where `ui_command` serves a local store


def ui_command(uri: str) -> str | None:
    """The command that serves the MLflow UI on a local store (None: a server already serves it)."""
    if is_local_store(uri):
        artifacts = Path(uri.removeprefix("sqlite:///")).parent / LOCAL_ARTIFACTS
        return (f"mlflow ui --backend-store-uri {uri} --default-artifact-root {artifacts.as_uri()} "
                "--host 127.0.0.1 --port 5000")
    return None


def ui_link(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of an experiment or run, in its runs view.

    MLflow 3 opens experiments in the GenAI (traces) view unless the URL asks for
    `workflowType=machine_learning`, which lands on the runs table with nested trials.
    """
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base}/{page}?workflowType=machine_learning"


def ui_hint(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """What to print after a run: the link, preceded by the command that serves it where needed."""
    command = ui_command(uri)
    link = ui_link(uri, experiment_id, run_id)
    return f"{link}  (serve it with: {command})" if command else link


REACHABLE_TIMEOUT_S = 5.0


def check_reachable(uri: str, timeout_s: float = REACHABLE_TIMEOUT_S) -> None:
    """Fail fast, before any training, when an HTTP tracking server does not answer.

    The whole check (name lookup, connect, the /health answer) gets `timeout_s`: a socket
    timeout alone does not bound a slow name lookup or a server that accepts and never answers.
    """
    if not uri.startswith(("http://", "https://")):
        if not uri.startswith(("sqlite:", "file:", "postgresql", "mysql", "databricks")) and "://" in uri:
            raise StrideError(f"tracking URI {uri!r}: unsupported scheme (use http(s)://, sqlite:///, a database URL)")
        if is_file_store(uri) and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
            raise StrideError(f"tracking URI {uri!r} is an MLflow file store, which MLflow 3 no longer opens (it is in "
                              "maintenance mode): use sqlite:///PATH/mlflow.db (stride's default is ./mlruns.db), an "
                              "http(s):// server, or set MLFLOW_ALLOW_FILE_STORE=true to open it anyway")
        return
    outcome: list[BaseException | int] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
                outcome.append(response.status)
        except BaseException as err:  # handed to the caller's thread
            outcome.append(err)

    worker = threading.Thread(target=probe, name="stride-tracking-probe", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        raise StrideError(f"MLflow tracking server {uri} is unreachable (no answer within {timeout_s:g} s); start it "
                          "or pass another --tracking-uri")
    if isinstance(outcome[0], BaseException):
        reason = getattr(outcome[0], "reason", outcome[0])
        raise StrideError(f"MLflow tracking server {uri} is unreachable ({reason}); start it or pass another "
                          "--tracking-uri") from None
    if outcome[0] != 200:
        raise StrideError(f"MLflow server {uri} answered /health with HTTP {outcome[0]}")


def ensure_experiment(uri: str, experiment: str) -> str:
    """The id of `experiment` in `uri`, created if needed (local artifacts beside a local DB)."""
    check_reachable(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    location = None
    if is_local_store(uri):
        location = (Path(uri.removeprefix("sqlite:///")).parent / LOCAL_ARTIFACTS).as_uri()
    try:
        return client.create_experiment(experiment, artifact_location=location)
    except mlflow.exceptions.MlflowException as err:  # created concurrently by another process?
        found = client.get_experiment_by_name(experiment)
        if found is None:  # no: the store itself refused (read-only, deleted, ...)
            raise StrideError(f"tracking store {uri}: cannot create experiment {experiment!r}: {err}") from None
        return found.experiment_id


def set_fluent_tracking_uri(uri: str | None) -> str | None:
    """Point MLflow's process-wide (fluent) tracking URI at `uri` (None: unset it) and return what it was set to
    before (None: nothing but $MLFLOW_TRACKING_URI), with $MLFLOW_TRACKING_URI left as it was.

    The one place stride moves that URI. `mlflow.set_tracking_uri` also exports it as $MLFLOW_TRACKING_URI,
    which would redirect every later store resolution of the process and of its children, even after the
    store was deleted."""
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    if before == exported:  # only the variable set it: keeping the variable keeps it
        before = None
    # typed str | Path, but mlflow's code takes None too, and unsets the URI
    mlflow.set_tracking_uri(uri)  # type: ignore[arg-type]
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported
    return before


@contextlib.contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent tracking URI set to `uri` for a block (`mlflow.pytorch.log_model`'s own client writes
    there), then put back as it was: a caller's own (`stride.registry.client.connect`) survives."""
    before = set_fluent_tracking_uri(uri)
    try:
        yield
    finally:
        set_fluent_tracking_uri(before)
