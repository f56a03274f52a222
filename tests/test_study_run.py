"""A smoke study end to end, as a user runs it: `stride study run` in its own process on an embedded Ray and a real
MLflow server, its driver stopped by SIGTERM after the first row finishes, resumed, and reported again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from stride.tracking.contract import STUDY_ROW_TAG, STUDY_TAG
from stride.tuning.runs import child_runs

pytestmark = pytest.mark.slow

STUDY = ["a-table3-cnn-vs-ffn", "--scale", "smoke"]
TINY = ["--set", "trainer.max_epochs=2"]


def stride(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stride.pipelines.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finished_trials(uri: str) -> list:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("study-a-table3-cnn-vs-ffn")
    if experiment is None:
        return []
    return [r for r in client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
            if STUDY_ROW_TAG in r.data.tags]


def test_a_smoke_study_runs_is_stopped_resumes_and_reports(mlflow_server, tmp_path):
    driver = stride("study", "run", *STUDY, "--repeats", "2", "--name", "smoke", "--storage", str(tmp_path / "ray"),
                    "--tracking-uri", mlflow_server, *TINY, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None and not finished_trials(mlflow_server):
        time.sleep(1)
    assert driver.poll() is None, driver.communicate()[0][-4000:]
    driver.send_signal(signal.SIGTERM)
    stopped = driver.communicate(timeout=180)[0]
    assert driver.returncode == 143, stopped[-4000:]
    hint = re.search(r"continue with: (stride study run .*)", stopped).group(1)
    assert "a-table3-cnn-vs-ffn --scale smoke --resume smoke" in hint
    done_before = len(finished_trials(mlflow_server))
    assert 1 <= done_before < 4

    resumed = stride("study", "run", *STUDY, "--resume", "smoke", "--storage", str(tmp_path / "ray"),
                     "--tracking-uri", mlflow_server, cwd=tmp_path)
    out = resumed.communicate(timeout=480)[0]
    assert resumed.returncode == 0, out[-4000:]
    table = [line for line in out.splitlines() if line.startswith("| cnn |") or line.startswith("| ffn |")]
    assert len(table) == 2 and all("(n=2)" in line for line in table), out[-3000:]
    assert "| cnn | CNN | 99.5 |" in table[0] and "| ffn | FFN | 97.3 |" in table[1]
    assert "Hardware: " in out and "Scale: smoke" in out

    parent = re.search(r"parent run (\w{32})", out).group(1)
    client = mlflow.MlflowClient(mlflow_server)
    assert client.get_run(parent).data.tags[STUDY_TAG] == "a-table3-cnn-vs-ffn"
    assert len(finished_trials(mlflow_server)) == 4  # the trials that had finished were not trained again
    assert sorted(r.data.tags[STUDY_ROW_TAG] for r in child_runs(mlflow_server, parent).values()) == \
        ["cnn", "cnn", "ffn", "ffn"]
    logged = {a.path for a in client.list_artifacts(parent, "study")} | \
        {a.path for a in client.list_artifacts(parent, "plots")}
    assert {"study/report.md", "study/study.json", "plots/a-table3-cnn-vs-ffn.png"} <= logged

    again = stride("study", "report", "--run", parent, "--tracking-uri", mlflow_server, cwd=tmp_path)
    reported = again.communicate(timeout=120)[0]
    assert again.returncode == 0 and [line for line in reported.splitlines() if line.startswith("| c")] == table[:1]
