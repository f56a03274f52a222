"""stride against the production backend: an MLflow server on a real PostgreSQL.

`pgserver` ships a self-contained PostgreSQL; it listens on a Unix socket in the test's
folder only. The MLflow server runs as infra/mlflow/production/start-server.sh starts it
(psycopg2 driver, proxied artifacts), without the compose file's MinIO and auth.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pgserver
import pytest
import yaml
from conftest import running_mlflow_server
from mlflow import MlflowClient
from PIL import Image

from stride.pipelines.cli import main

pytestmark = pytest.mark.slow

MODEL = "pg-digits"


@pytest.fixture(scope="module")
def postgres_mlflow(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("postgres")
    database = pgserver.get_server(root / "pgdata", cleanup_mode="stop")
    database.psql("CREATE DATABASE mlflow;")
    socket_folder = database.get_uri().split("host=")[1]
    backend = f"postgresql+psycopg2://postgres:@/mlflow?host={socket_folder}"
    try:
        yield from running_mlflow_server(backend, root, workers=2)
    finally:
        database.cleanup()


def stride(capsys: pytest.CaptureFixture, *argv: str | Path) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    return out


def test_train_search_promote_concurrently_and_predict_on_postgresql(postgres_mlflow, digits_shards, tmp_path, capsys):
    uri = postgres_mlflow
    common = [f"data.path={digits_shards}", "model.channels=8", "data.batch_size=128",
              f"trainer.checkpoint_dir={tmp_path / 'checkpoints'}", "trainer.enable_progress_bar=false",
              "tracking.experiment=postgres"]
    out = stride(capsys, "train", "digits-cnn", "--tracking-uri", uri, "--set", *common, "trainer.max_epochs=2")
    assert "test_acc=" in out

    spec = {"base": "digits-cnn", "overrides": [*common, "trainer.max_epochs=2"],
            "space": {"optim.lr": {"grid": [0.05, 0.0005]}}, "num_samples": 1, "scheduler": "fifo",
            "max_concurrent_trials": 2}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    stride(capsys, "tune", "--config", tmp_path / "spec.yaml", "--name", "pg-search", "--storage", tmp_path / "ray",
           "--tracking-uri", uri)
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("postgres").experiment_id],
                                "tags.`stride.kind` = 'search'")[0]
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}

    promote = [sys.executable, "-m", "stride.pipelines.cli", "promote", "--search", parent.info.run_id,
               "--model-name", MODEL, "--tracking-uri", uri]
    racing = [subprocess.Popen(promote, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
              for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in racing]
    assert [p.returncode for p in racing] == [0, 0], [err[-2000:] for _, err in outputs]
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == 1 and client.get_model_version_by_alias(MODEL, "champion").version == "1"
    assert sum("registered:" in out for out, _ in outputs) == 1  # the other one found it already champion

    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    out = stride(capsys, "predict", "--model", f"models:/{MODEL}@champion", image, "--json", "--tracking-uri", uri)
    assert '"predictions"' in out and str(image) in out
