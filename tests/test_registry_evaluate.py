"""`stride evaluate`: metrics of a registered model on a dataset split, and a confusion matrix in MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from test_registry_support import TrainedRuns, runs, stride  # noqa: F401 (fixture)

from stride.datamodules.image_shards import write_image_classification
from stride.registry import promote_best

pytestmark = pytest.mark.slow  # end to end: real Lightning, MLflow, Ray or processes

MODEL = "digits-served"


@pytest.fixture(scope="module")
def champion(mlflow_server: str, runs: TrainedRuns) -> str:
    promote_best(mlflow_server, run_id=runs.better, model_name=MODEL)  # idempotent if another module did it
    return f"models:/{MODEL}@champion"


def test_evaluate_prints_metrics_and_logs_a_confusion_matrix(mlflow_server, champion, runs, digits_shards, capsys):
    code, out, err = stride(capsys, "evaluate", "--model", champion, "--data", digits_shards, "--split", "test",
                            "--tracking-uri", mlflow_server)
    assert code == 0, err
    client = MlflowClient(mlflow_server)
    trained = client.get_run(runs.better).data.metrics
    assert f"test_acc : {trained['test_acc']:.4f}" in out and "samples  : 360" in out
    assert f"test_loss: {trained['test_loss']:.4f}" in out
    assert "workflowType=machine_learning" in out and "View run" not in out  # stride's link, not MLflow's
    experiment = client.get_experiment_by_name("evaluations")
    evaluation = client.search_runs([experiment.experiment_id], f"tags.`stride.evaluated_model` = '{champion}'")[0]
    assert evaluation.data.tags["stride.evaluated_run_id"] == runs.better
    assert evaluation.data.metrics["test_acc"] == pytest.approx(trained["test_acc"], abs=1e-4)
    plots = [a.path for a in client.list_artifacts(evaluation.info.run_id, "plots")]
    assert plots == ["plots/confusion_matrix_test.png"]


def test_evaluate_rejects_data_of_another_shape(mlflow_server, champion, tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    split = lambda n: (rng.integers(0, 255, (n, 1, 16, 16), dtype=np.uint8), rng.integers(0, 10, n))  # noqa: E731
    small = tmp_path / "small"
    write_image_classification(small, dataset="small", splits={"train": split(20), "val": split(5), "test": split(5)},
                               class_names=[str(d) for d in range(10)], source={}, parameters={})
    code, _, err = stride(capsys, "evaluate", "--model", champion, "--data", small, "--tracking-uri", mlflow_server)
    assert code == 2
    assert f"takes inputs of shape [1, 28, 28], but dataset {small} holds samples of shape [1, 16, 16]" in err
