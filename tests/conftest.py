"""Shared fixtures: real datasets on disk, a real `mlflow server` subprocess, tiny configs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
# Every Ray in the tests (ray.init, `ray start` subprocesses, job clients) on 127.0.0.1 without token
# auth, decided before Ray is first imported: Ray reads the mode once per process, so a mode switched
# later by one test would leave clusters and clients of later tests disagreeing.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as the CLI sets it: no calls to outside hosts
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


# Fixtures that start real servers or clusters: a test that uses one (directly or through another
# fixture) is end to end and must be marked slow, so `pytest -m "not slow"` stays a fast lane.
END_TO_END_FIXTURES = {"mlflow_server", "local_ray", "ray_head", "two_node_cluster", "s3_server"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items
                if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("slow")]
    if unmarked:
        raise pytest.UsageError("end-to-end tests (they use " + ", ".join(sorted(END_TO_END_FIXTURES)) + ") must be "
                                "marked slow: " + ", ".join(unmarked))


@pytest.fixture(autouse=True)
def no_exported_tracking_uri():
    """A test leaves $MLFLOW_TRACKING_URI as it found it: `mlflow.set_tracking_uri` exports it, and a later test's
    subprocesses (a `stride tune` driver) would then resolve their default store to an earlier test's server."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    after = os.environ.get("MLFLOW_TRACKING_URI")
    if after != before:
        os.environ.pop("MLFLOW_TRACKING_URI", None) if before is None else os.environ.update(MLFLOW_TRACKING_URI=before)
        pytest.fail(f"the test left $MLFLOW_TRACKING_URI={after!r} (was {before!r}); use "
                    "stride.tracking.store.fluent_tracking_uri, which exports nothing")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout_s: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text() if log else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s:\n{log.read_text() if log else ''}")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow tracking server on 127.0.0.1 with a SQLite backend and proxied local artifacts."""
    root = tmp_path_factory.mktemp("mlflow-server")
    yield from running_mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root)


def running_mlflow_server(backend_store_uri: str, root: Path, workers: int = 1,
                          artifact_args: list[str] | None = None):
    """Start `mlflow server` on 127.0.0.1 with proxied artifacts under `root` (or with `artifact_args`, e.g.
    `--artifacts-destination s3://...`, in the environment it inherits); yield its URI; stop it."""
    port = free_port()
    if artifact_args is None:
        artifact_args = ["--artifacts-destination", str(root / "artifacts")]
    log = root / "server.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
             *artifact_args, "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=root)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", 180, process, log)
        yield uri
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in digits, prepared once per session (small shards so several exist per split)."""
    from stride.datamodules.sources.digits import prepare_digits

    out = tmp_path_factory.mktemp("data") / "digits"
    prepare_digits(out, samples_per_shard=300)
    return out


@pytest.fixture
def tiny_overrides(digits_shards: Path, tmp_path: Path) -> list[str]:
    """Overrides that make the digits-cnn recipe train in seconds on a CPU, writing under tmp_path."""
    return [f"data.path={digits_shards}", "model.channels=8", "trainer.max_epochs=2", "data.batch_size=128",
            f"trainer.checkpoint_dir={tmp_path / 'checkpoints'}", "trainer.enable_progress_bar=false",
            "tracking.experiment=tests"]
