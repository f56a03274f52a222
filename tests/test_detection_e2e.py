"""Face detection end to end on the built-in composed faces: prepare, train (real Lightning, real MLflow
server), evaluate the logged model the WIDER FACE way with the official per-image files (scored again by the
Python port of the official tools), predict a real photograph. Tiny sizes: this checks the wiring, not the
detector's quality (docs/benchmarks.md)."""

from __future__ import annotations

import json
import re

import mlflow
import pytest
import wider_port
from PIL import Image

from stride.datamodules.sources.faces import astronaut_face
from stride.metrics.detection_ap import read_prediction_files
from stride.pipelines.cli import main

pytestmark = pytest.mark.slow


def test_prepare_train_evaluate_predict(tmp_path, mlflow_server, capsys):
    shards = tmp_path / "faces"
    assert main(["data", "prepare", "faces", "--out", str(shards), "--val-size", "8", "--raw-out",
                 str(tmp_path / "raw")]) == 0
    assert main(["train", "faces-facenet-v1-1", "--tracking-uri", mlflow_server, "--set", f"data.path={shards}",
                 "data.image_size=64", "model.head_channels=16", "model.score_threshold=0", "trainer.max_epochs=1",
                 "trainer.limit_train_batches=4", "trainer.enable_progress_bar=false",
                 f"trainer.checkpoint_dir={tmp_path / 'ckpt'}", "tracking.experiment=faces-e2e"]) == 0
    out = capsys.readouterr().out
    model = re.search(r"model: (models:/\S+)", out).group(1)
    run_id = re.search(r"run (\w{32}): test_ap=", out).group(1)
    artifacts = {a.path for a in mlflow.MlflowClient(mlflow_server).list_artifacts(run_id, "plots")}
    assert {"plots/detections_test.png", "plots/precision_recall_test.png", "plots/learning_curves.png",
            "plots/detections_astronaut.png"} <= artifacts

    predictions = tmp_path / "predictions"
    assert main(["evaluate", "--model", model, "--data", str(shards), "--tracking-uri", mlflow_server,
                 "--predictions-dir", str(predictions)]) == 0
    out = capsys.readouterr().out
    for subset in ("test_ap", "test_ap_easy", "test_ap_medium", "test_ap_hard"):
        value = float(re.search(rf"{subset}\s*: ([0-9.]+)", out).group(1))
        assert 0.0 <= value <= 1.0
    trained_ap = mlflow.MlflowClient(mlflow_server).get_run(run_id).data.metrics["test_ap"]
    evaluated_ap = float(re.search(r"test_ap\s*: ([0-9.]+)", out).group(1))
    assert evaluated_ap == pytest.approx(trained_ap, abs=1e-4)  # the logged model reproduces training's figure
    assert len(read_prediction_files(predictions)) == 60  # every WIDER_val image of the composed set
    # the widely used Python port of the official tools, on the files stride wrote, gives stride's figures
    port = wider_port.evaluate(predictions, tmp_path / "raw" / "eval_tools" / "ground_truth")
    for subset in ("easy", "medium", "hard"):
        assert port[subset] == pytest.approx(float(re.search(rf"test_ap_{subset}\s*: ([0-9.]+)", out).group(1)),
                                             abs=1e-4), subset
    assert port["hard"] > 0  # detections to compare (the threshold 0 keeps even an untrained network's boxes)

    image, _ = astronaut_face()
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(image).save(photo)
    drawn = tmp_path / "drawn"
    assert main(["predict", "--model", model, str(photo), "--tracking-uri", mlflow_server, "--json",
                 "--out", str(drawn)]) == 0
    found = json.loads(capsys.readouterr().out)["predictions"][0]
    assert found["file"] == str(photo) and found["picture"] == str(drawn / "astronaut_faces.png")
    with Image.open(found["picture"]) as picture:  # the photograph's own size, boxes drawn on it
        assert picture.size == (image.shape[1], image.shape[0])


def test_detection_options_are_refused_where_they_do_nothing(tmp_path, capsys):
    assert main(["train", "digits-cnn", "--set", "data.image_size=64"]) != 0
    assert "data.image_size: an option of tasks captioning, detection, not of task 'classification'" in \
        capsys.readouterr().err
