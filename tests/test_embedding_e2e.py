"""The embedding task end to end on the built-in held-out digits: prepare, train the digits recipe recorded in a real
MLflow server, promote (re-evaluated on the test pairs), then `stride predict` a pair, `stride evaluate` the
validation pairs and `stride embed` a folder by alias, the threshold travelling inside the registered model."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from stride.config import load_config
from stride.datamodules.sources.held_out_digits import prepare_held_out_digits
from stride.pipelines.cli import main
from stride.pipelines.train import train_and_record
from stride.registry import promote_best, write_sample_images

pytestmark = pytest.mark.slow  # real Lightning and a real MLflow server

MODEL = "digits-verifier"


def test_held_out_digits_train_promote_and_verify_a_pair_by_alias(mlflow_server, tmp_path, capsys):
    data = tmp_path / "digits-heldout"
    prepare_held_out_digits(data)
    config = load_config("digits-embedding-triplet", [
        f"data.path={data}", "trainer.max_epochs=2", "data.num_workers=0",  # no loader process to start: faster
        f"trainer.checkpoint_dir={tmp_path / 'checkpoints'}", "trainer.enable_progress_bar=false",
        "tracking.experiment=embedding-e2e"])
    trained = train_and_record(config, tracking_uri=mlflow_server)
    metrics = trained.test_metrics
    # unseen digits 7-9, 1,000 test pairs in 10 folds: better than chance after two epochs
    assert metrics["test_verification_acc"] > 0.55 and metrics["test_samples"] == 267
    assert {"test_verification_acc_std", "test_tar_at_far_1e-02", "test_top1", "test_threshold"} <= set(metrics)
    client = mlflow.MlflowClient(mlflow_server)
    run = client.get_run(trained.run_id)
    assert run.data.tags["stride.task"] == "embedding" and "best_val_verification_acc" in run.data.metrics
    assert {"plots/roc_test.png", "plots/learning_curves.png"} <= {a.path for a in client.list_artifacts(
        trained.run_id, "plots")}

    promoted = promote_best(mlflow_server, run_id=trained.run_id, model_name=MODEL)
    assert promoted.promoted
    assert promoted.evaluation.value("verification_acc") == pytest.approx(metrics["test_verification_acc"], abs=1e-6)

    samples = write_sample_images(data, tmp_path / "images", count=12)
    by_digit: dict[str, list[str]] = {}
    for path, digit in samples:
        by_digit.setdefault(digit, []).append(str(path))
    first, second = sorted(by_digit, key=lambda d: -len(by_digit[d]))[:2]
    capsys.readouterr()  # what training printed
    assert main(["predict", "--model", f"models:/{MODEL}@champion", by_digit[first][0], by_digit[first][1],
                 by_digit[second][0], "--json", "--tracking-uri", mlflow_server]) == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    assert [r["file"] for r in rows] == [by_digit[first][1], by_digit[second][0]]
    threshold = rows[0]["threshold"]
    chosen = [m.value for m in client.get_metric_history(trained.run_id, "val_threshold")]  # one per epoch
    assert any(threshold == pytest.approx(value, rel=1e-5) for value in chosen)  # the kept epoch's
    assert all(r["same"] == (r["distance"] <= threshold) and r["distance_kind"] == "Euclidean" for r in rows)

    assert main(["evaluate", "--model", f"models:/{MODEL}@champion", "--data", str(data), "--split", "val",
                 "--tracking-uri", mlflow_server]) == 0
    evaluated = capsys.readouterr().out
    assert "val_verification_acc" in evaluated and "val_acc_at_model_threshold" in evaluated

    out = tmp_path / "embeddings.npz"
    assert main(["embed", "--model", f"models:/{MODEL}@champion", str(tmp_path / "images"), "--out", str(out),
                 "--tracking-uri", mlflow_server]) == 0
    written = np.load(out)
    assert written["embeddings"].shape == (12, 32) and len(written["files"]) == 12
    np.testing.assert_allclose(np.linalg.norm(written["embeddings"], axis=1), 1, rtol=1e-5)
    assert float(written["threshold"]) == pytest.approx(threshold, rel=1e-6)
