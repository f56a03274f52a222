"""A task defined only in tests/toy_task.py trains, is searched, promoted and predicts by alias through stride's
own commands, each a fresh process that finds the task through $STRIDE_PLUGINS: adding a task edits nothing
under the package. The pytest process never imports the plugin, so nothing here registers it by hand."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from stride.tracking.contract import SEARCH_ID_TAG

pytestmark = pytest.mark.slow

PLUGIN = Path(__file__).with_name("toy_task.py")


def stride(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "STRIDE_PLUGINS": str(PLUGIN)}
    done = subprocess.run([sys.executable, "-m", "stride.pipelines.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=480)
    if check:
        assert done.returncode == 0, f"stride {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done


@pytest.fixture
def toy_config(tmp_path: Path) -> Path:
    data = tmp_path / "toy"
    subprocess.run([sys.executable, str(PLUGIN), str(data)], check=True, timeout=120)
    config = {"name": "toy-linear", "task": "toy_regression",
              "data": {"path": str(data), "batch_size": 32, "normalize": "none", "num_workers": 0,
                       "input_noise": 0.01},
              "model": {"architecture": "toy_mlp", "hidden": 16},
              "optim": {"name": "adamw", "lr": 0.02},
              "trainer": {"max_epochs": 4, "checkpoint_dir": str(tmp_path / "checkpoints"),
                          "enable_progress_bar": False},
              "tracking": {"experiment": "toy"}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_task_defined_in_tests_trains_searches_promotes_and_predicts(toy_config, mlflow_server, tmp_path):
    trained = stride("train", "--config", str(toy_config), "--tracking-uri", mlflow_server, cwd=tmp_path)
    # its quality decides the monitor and is what the run reports; a linear target is learnt well in 4 epochs
    test_mse = float(re.search(r"test_mse=([0-9.]+)", trained.stdout).group(1))
    assert test_mse < 1.0, trained.stdout
    run_id = re.search(r"run (\w{32}):", trained.stdout).group(1)
    client = mlflow.MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.data.tags["stride.task"] == "toy_regression" and "best_val_mse" in run.data.metrics

    spec = tmp_path / "toy-search.yaml"
    spec.write_text(yaml.safe_dump({"base": str(toy_config), "space": {"optim.lr": {"grid": [0.03, 0.0003]}},
                                    "num_samples": 1, "max_concurrent_trials": 1, "scheduler": "fifo",
                                    "overrides": ["trainer.max_epochs=2", "tracking.experiment=toy-search"]}))
    searched = stride("tune", "--config", str(spec), "--name", "toy-search", "--storage", str(tmp_path / "ray"),
                      "--tracking-uri", mlflow_server, cwd=tmp_path)
    # lower is better: the task's mode, not a default of max, picks the best trial
    assert re.search(r"best val_mse=", searched.stdout), searched.stdout
    search_id = re.search(r"parent run (\w{32})", searched.stdout).group(1)
    assert "test_mse" in searched.stdout and "test_mae" in searched.stdout  # the task's leaderboard columns
    trials = client.search_runs([client.get_run(search_id).info.experiment_id],
                                filter_string=f"tags.`{SEARCH_ID_TAG}` = '{search_id}'")
    best = client.get_run(client.get_run(search_id).data.tags["stride.best_run_id"])
    trial_mse = {r.data.params["optim.lr"]: r.data.metrics["best_val_mse"] for r in trials
                 if r.info.run_id != search_id}
    assert set(trial_mse) == {"0.03", "0.0003"}
    assert best.data.metrics["best_val_mse"] == min(trial_mse.values())

    stride("promote", "--search", search_id, "--model-name", "toy-regressor", "--tracking-uri", mlflow_server,
           cwd=tmp_path)
    version = client.get_model_version_by_alias("toy-regressor", "champion")
    assert version.run_id == best.info.run_id

    features = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    np.save(tmp_path / "one.npy", features)
    predicted = stride("predict", "--model", "models:/toy-regressor@champion", str(tmp_path / "one.npy"),
                       "--json", "--tracking-uri", mlflow_server, cwd=tmp_path)
    row = json.loads(predicted.stdout)["predictions"][0]
    assert row["file"] == str(tmp_path / "one.npy") and isinstance(row["prediction"], float)


def test_the_plugin_task_owns_its_options(toy_config, tmp_path):
    """An option of the plugin task given to a built-in task is an error naming the plugin task."""
    refused = stride("train", "digits-cnn", "--set", "data.input_noise=0.1", cwd=tmp_path, check=False)
    assert refused.returncode != 0
    assert "data.input_noise: an option of task toy_regression, not of task 'classification'" in refused.stderr
