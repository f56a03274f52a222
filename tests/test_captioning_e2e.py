"""Captioning end to end on the built-in shapes scenes: prepare, train a GRU decoder (real Lightning, real MLflow
server), evaluate the logged model with the COCO caption metrics and the constant-caption baseline, predict with
the logged greedy model and with a beam, promote on CIDEr-D. Tiny sizes: this checks the wiring, not the
captioner's quality (docs/benchmarks.md has the trained figures);
tests/test_captioning_models.py exports both decoders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pytest
from PIL import Image

from stride.datamodules.sources.shapes_captions import prepare_shapes_captions
from stride.datamodules.vocabulary import Vocabulary
from stride.pipelines.cli import main

pytestmark = pytest.mark.slow

TINY = {"caption_gru": ["model.hidden_size=32", "model.num_layers=1", "model.embedding_size=32"]}


def train(recipe: str, architecture: str, shards, tmp_path, mlflow_server, capsys) -> tuple[str, str]:
    assert main(["train", recipe, "--tracking-uri", mlflow_server, "--set", f"data.path={shards}",
                 "data.image_size=32", "data.max_words=12", "data.batch_size=16", "trainer.max_epochs=1",
                 "trainer.enable_progress_bar=false", f"trainer.checkpoint_dir={tmp_path / architecture}",
                 "tracking.experiment=captions-e2e", *TINY[architecture]]) == 0
    out = capsys.readouterr().out
    return re.search(r"model: (models:/\S+)", out).group(1), re.search(r"run (\w{32}): test_bleu1=", out).group(1)


def test_prepare_train_evaluate_predict_promote(tmp_path, mlflow_server, capsys):
    shards = tmp_path / "shapes"
    prepare_shapes_captions(shards, train_images=64, val_images=16, val_size=16, image_size=32, min_count=1)
    vocabulary = Vocabulary.load(shards / "vocabulary.json")
    gru_model, gru_run = train("caption-gru-shapes", "caption_gru", shards, tmp_path, mlflow_server, capsys)

    client = mlflow.MlflowClient(mlflow_server)
    assert {"plots/captions_val.png", "plots/learning_curves.png"} <= {a.path for a in
                                                                      client.list_artifacts(gru_run, "plots")}
    logged = json.loads(Path(client.download_artifacts(gru_run, "vocabulary/vocabulary.json", str(tmp_path)))
                        .read_text())
    assert logged["words"] == vocabulary.words  # a user decodes the model's ids with it
    assert "val_cider" in client.get_run(gru_run).data.metrics

    results = tmp_path / "results"
    assert main(["evaluate", "--model", gru_model, "--data", str(shards), "--tracking-uri", mlflow_server,
                 "--predictions-dir", str(results)]) == 0
    out = capsys.readouterr().out
    for metric in ("bleu1", "bleu4", "rouge_l", "cider", "baseline_cider"):
        assert float(re.search(rf"test_{metric}\s*: ([0-9.]+)", out).group(1)) >= 0.0
    written = json.loads((results / "captions_test_results.json").read_text())
    assert len(written) == 16 and set(written[0]) == {"image_id", "caption"}  # the COCO results format

    photo = tmp_path / "scene.png"
    Image.new("RGB", (50, 40), (200, 30, 30)).save(photo)
    for extra in ([], ["--beam-size", "3"]):
        assert main(["predict", "--model", gru_model, str(photo), "--tracking-uri", mlflow_server, "--json",
                     *extra]) == 0
        caption = json.loads(capsys.readouterr().out)["predictions"][0]["caption"]
        assert all(word in vocabulary for word in caption.split())

    assert main(["promote", "--experiment", "captions-e2e", "--model-name", "captioner", "--data", str(shards),
                 "--tracking-uri", mlflow_server]) == 0
    assert "val_cider" in capsys.readouterr().out  # chosen on CIDEr-D, the task's quality
    version = mlflow.MlflowClient(mlflow_server).get_model_version_by_alias("captioner", "champion")
    assert json.loads(version.tags["stride.class_names"]) == vocabulary.words  # predict by alias decodes with it


def test_caption_options_are_refused_where_they_do_nothing(tmp_path, capsys):
    shards = tmp_path / "shapes"
    prepare_shapes_captions(shards, train_images=8, val_images=4, val_size=4, image_size=16, min_count=0)
    assert main(["train", "caption-gru-shapes", "--set", f"data.path={shards}", "data.train_sizes=[32]"]) != 0
    assert "data.train_sizes: an option of task detection, not of task 'captioning'" in capsys.readouterr().err
