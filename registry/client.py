"""Connecting to the tracking server and registry, and turning MLflow's errors into stride's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from stride.errors import StrideError
from stride.tracking.store import check_reachable, resolve_tracking_uri, set_fluent_tracking_uri

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def connect(tracking_uri: str | None = None) -> MlflowClient:
    """Resolve and check the store (fails fast when a server is down), point mlflow's fluent calls
    (`load_model`, artifact downloads) at it, and return a client of it.

    Nothing else of the process is pinned (`set_fluent_tracking_uri` says why), and no global registry
    URI is set: it would win over the tracking URI of every later `MlflowClient(uri)`. The registry
    follows the tracking URI by default."""
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    set_fluent_tracking_uri(uri)
    return MlflowClient(uri, registry_uri=uri)


def error_code(err: MlflowException) -> str:
    return getattr(err, "error_code", "") or ""


def is_missing(err: MlflowException) -> bool:
    return error_code(err) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(err).lower()


@contextmanager
def mlflow_errors(what: str) -> Iterator[None]:
    """Report an MLflow failure as a StrideError that says what was being done."""
    try:
        yield
    except MlflowException as err:
        raise StrideError(f"{what}: {err.message if hasattr(err, 'message') else err}") from None
