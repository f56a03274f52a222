"""Fast style transfer end to end on the built-in photographs (docs/stylization.md): prepare two styles, train the
multi-style recipe recorded in a real MLflow server, promote (re-measured with the fixed ruler on the test
images), then `stride predict` by alias writes every style, and a blend, at the photo's own odd size."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from stride.config import load_config
from stride.datamodules.sources.content_images import prepare_photos
from stride.pipelines.cli import main
from stride.pipelines.train import train_and_record
from stride.registry import promote_best

pytestmark = pytest.mark.slow  # real Lightning and a real MLflow server

MODEL = "photos-stylizer"


def test_a_two_style_network_trains_promotes_and_stylises_any_size_by_alias(mlflow_server, tmp_path, capsys):
    data = tmp_path / "photos"
    prepare_photos(data, styles="stain,brick", image_size=32, train_size=24, val_size=4, test_size=4)
    config = load_config("photos-pastiche-multi", [
        f"data.path={data}", "trainer.max_epochs=3", "data.num_workers=0", "model.width=4", "optim.lr=0.01",
        "model.residual_blocks=2", "loss.network_width=0.125", "data.style_size=64", "loss.content_weight=1",
        "loss.style_weight=5",
        f"trainer.checkpoint_dir={tmp_path / 'checkpoints'}", "trainer.enable_progress_bar=false",
        "tracking.experiment=stylization-e2e"])
    trained = train_and_record(config, tracking_uri=mlflow_server)
    metrics = trained.test_metrics
    assert 0 < metrics["test_style_ratio"] < 1  # the outputs moved toward their styles' Gram statistics
    assert {"test_content_loss", "test_style_loss", "test_loss", "test_style_term", "test_tv_term"} <= set(metrics)
    client = mlflow.MlflowClient(mlflow_server)
    run = client.get_run(trained.run_id)
    assert run.data.tags["stride.task"] == "stylization" and "best_val_style_ratio" in run.data.metrics
    assert {"plots/stylized_test.png", "plots/learning_curves.png"} <= {a.path for a in client.list_artifacts(
        trained.run_id, "plots")}
    checkpoint = torch.load(trained.outcome.best_checkpoint, map_location="cpu", weights_only=True)
    keys = set(checkpoint["state_dict"])
    assert keys and all(k.startswith(("network.", "gram_", "targets_ready")) for k in keys), sorted(keys)[:5]
    assert "loss_network" in checkpoint["hyper_parameters"]["stride"]  # described, not saved

    promoted = promote_best(mlflow_server, run_id=trained.run_id, model_name=MODEL)
    assert promoted.promoted
    # the logged graph, measured by `stride evaluate`'s code, reproduces training's test figure
    assert promoted.evaluation.value("style_ratio") == pytest.approx(metrics["test_style_ratio"], rel=1e-4)

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(photo)
    capsys.readouterr()
    out = tmp_path / "stylised"
    assert main(["predict", "--model", f"models:/{MODEL}@champion", str(photo), "--out", str(out), "--json",
                 "--tracking-uri", mlflow_server]) == 0
    row = json.loads(capsys.readouterr().out)["predictions"][0]
    assert row["styles"] == ["stain", "brick"] and (row["height"], row["width"]) == (37, 53)
    for written in row["written"]:
        assert Image.open(written).size == (53, 37)
    assert main(["predict", "--model", f"models:/{MODEL}@champion", str(photo), "--style", "0.5,0.5", "--out",
                 str(tmp_path / "blend"), "--tracking-uri", mlflow_server]) == 0
    assert [p.name for p in (tmp_path / "blend").iterdir()] == ["photo-blend.png"]
    assert main(["predict", "--model", f"models:/{MODEL}@champion", str(photo), "--style", "cubism",
                 "--tracking-uri", mlflow_server]) == 2
    assert "--style 'cubism'" in capsys.readouterr().err

    assert main(["evaluate", "--model", f"models:/{MODEL}@champion", "--data", str(data), "--split", "val",
                 "--tracking-uri", mlflow_server]) == 0
    assert "val_style_ratio" in capsys.readouterr().out
