"""A real S3-compatible server for the tests: moto's standalone server in a subprocess on 127.0.0.1.

Clients talk to it only over HTTP through the standard AWS configuration (`AWS_ENDPOINT_URL_S3`,
`AWS_ACCESS_KEY_ID`, ...), exactly as they would to MinIO or AWS: nothing on the client side is
mocked. `s3_env` sets that configuration for one test (and for the subprocesses it starts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port, wait_for_http

# what every test's client sees; moto accepts any key unless started with authentication on
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "stride-test-key-id", "AWS_SECRET_ACCESS_KEY": "stride-test-secret-9f3e",
                    "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen
    log: Path

    def env(self) -> dict[str, str]:
        """The environment a client needs: credentials and the endpoint override (boto3, pyarrow, MLflow)."""
        return {**TEST_CREDENTIALS, "AWS_ENDPOINT_URL_S3": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_s3_server(root: Path, *, extra_env: dict[str, str] | None = None, port: int | None = None) -> S3Server:
    """Start `moto_server` on 127.0.0.1 (a free port unless given) and wait until it answers."""
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    log = root / f"moto-{port}.log"
    env = {**os.environ, **(extra_env or {})}
    with open(log, "a") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=log_file, stderr=subprocess.STDOUT, cwd=root, env=env)
    server = S3Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for_http(f"{server.endpoint}/moto-api/", 60, process, log)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3-server"))
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The server's endpoint and test credentials in this process's environment (and its children's)."""
    env = s3_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return env


@pytest.fixture
def bucket(s3_env: dict[str, str]) -> str:
    """A fresh, empty bucket on the test server; its name."""
    import boto3

    name = f"stride-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name
