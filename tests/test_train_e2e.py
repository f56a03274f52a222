"""End-to-end training on real shards, recorded in a real MLflow server; the model loads back."""

import subprocess
import sys

import mlflow
import numpy as np
import pytest
import torch

from stride.config import load_config
from stride.datamodules.manifest import manifest_sha256
from stride.errors import StrideError
from stride.pipelines.train import train_and_record as train
from stride.tracking.store import fluent_tracking_uri
from stride.training.checkpoints import describe_checkpoint, load_module

pytestmark = pytest.mark.slow  # end to end: real Lightning, MLflow, Ray or processes


@pytest.fixture(scope="module")
def trained(mlflow_server, digits_shards, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    config = load_config("digits-cnn", [f"data.path={digits_shards}", "model.channels=8", "trainer.max_epochs=3",
                                        f"trainer.checkpoint_dir={tmp}", "trainer.enable_progress_bar=false",
                                        "tracking.experiment=e2e"])
    return train(config, tracking_uri=mlflow_server)


def test_run_records_params_metrics_tags_and_artifacts(trained, mlflow_server, digits_shards):
    client = mlflow.MlflowClient(mlflow_server)
    run = client.get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.05" and run.data.params["model.channels"] == "8"
    assert run.data.params["model.architecture"] == "digits_cnn"
    assert run.data.metrics["test_acc"] == pytest.approx(trained.test_metrics["test_acc"])
    assert run.data.metrics["test_samples"] == 360
    steps = [m.step for m in client.get_metric_history(trained.run_id, "val_acc")]  # Lightning's global steps
    assert len(steps) == 3 and steps == sorted(steps) and steps[0] > 0  # one value per epoch
    assert len(client.get_metric_history(trained.run_id, "train_loss")) == 3
    assert int(run.data.params["model.num_params"]) == sum(p.numel() for p in load_module(
        trained.outcome.best_checkpoint)[1].parameters())
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.name == "digits" and manifest_sha256(digits_shards).startswith(dataset.dataset.digest)
    assert run.data.tags["dataset.manifest_sha256"] == manifest_sha256(digits_shards)
    assert run.data.tags["stride.version"] and run.data.tags["stride.model_uri"] == trained.model_uri
    assert {"stride.recipe", "stride.task", "stride.architecture", "stride.host", "stride.pid",
            "stride.process_started", "dataset.path", "dataset.name"} <= set(run.data.tags)
    assert run.data.tags["best_checkpoint"] == trained.outcome.best_checkpoint
    assert run.data.metrics["best_val_acc"] == pytest.approx(trained.outcome.best_score)
    assert len(client.get_metric_history(trained.run_id, "epoch_time_s")) == 3
    assert {"wall_time_s", "time_setup_s", "time_fit_s", "time_test_s", "time_logging_s"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(trained.run_id)} | {
        a.path for folder in ("plots", "weights") for a in client.list_artifacts(trained.run_id, folder)}
    assert {"config.yaml", "plots/learning_curves.png", "plots/confusion_matrix_test.png",
            "weights/module.pt"} <= artifacts
    assert trained.test_metrics["test_acc"] > 0.5


def test_logged_model_loads_back_and_predicts(trained, mlflow_server, digits_shards):
    with fluent_tracking_uri(mlflow_server):  # exports nothing to later tests
        model_info = mlflow.models.get_model_info(trained.model_uri)
        assert model_info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 1, 28, 28)
        model = mlflow.pyfunc.load_model(trained.model_uri)
        from stride.datamodules.image_classification import ImageClassificationData

        datamodule = ImageClassificationData(digits_shards, batch_size=100)
        datamodule.setup("test")
        images, labels = next(iter(datamodule.test_dataloader()))
        probabilities = model.predict(images.float().numpy() / 255)
        assert probabilities.shape == (100, 10)
        np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)
        assert (probabilities.argmax(1) == labels.numpy()).mean() > 0.5


def test_best_checkpoint_is_weights_only_loadable_and_describes_itself(trained, digits_shards):
    path = trained.outcome.best_checkpoint
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert any(key.startswith("network.") for key in state["state_dict"])
    config, facts = describe_checkpoint(path)  # the checkpoint alone: task, architecture, hyper-parameters, data
    assert (config.task, config.model.architecture, config.model.params["channels"]) == ("classification",
                                                                                         "digits_cnn", 8)
    assert facts.input_shape == (1, 28, 28) and facts.num_classes == 10 and facts.normalization
    _, module = load_module(path)
    module.eval()
    from stride.datamodules.image_classification import ImageClassificationData

    data = ImageClassificationData(digits_shards, batch_size=360)
    data.setup("test")
    images, labels = next(iter(data.loader("test")))
    accuracy = (module(images.float() / 255).argmax(1) == labels).float().mean().item()
    assert accuracy == pytest.approx(trained.test_metrics["test_acc"], abs=1e-6)


def test_unreachable_tracking_server_fails_before_training(tiny_overrides):
    config = load_config("digits-cnn", tiny_overrides)
    with pytest.raises(StrideError, match="MLflow tracking server http://127.0.0.1:9 is unreachable"):
        train(config, tracking_uri="http://127.0.0.1:9")


def test_cli_ddp_two_processes_log_one_run(mlflow_server, digits_shards, tmp_path):
    """Lightning's DDP launcher on 2 CPU processes (gloo): one MLflow run, every test sample once."""
    overrides = [f"data.path={digits_shards}", "model.channels=8", "trainer.max_epochs=1", "data.batch_size=64",
                 f"trainer.checkpoint_dir={tmp_path}", "trainer.enable_progress_bar=false",
                 "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
                 "tracking.experiment=ddp", "tracking.log_model=false"]
    result = subprocess.run([sys.executable, "-m", "stride.pipelines.cli", "train", "digits-cnn", "--set",
                             *overrides, "--tracking-uri", mlflow_server],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = mlflow.MlflowClient(mlflow_server).search_runs(
        [mlflow.MlflowClient(mlflow_server).get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1
    assert runs[0].data.metrics["test_samples"] == 360
    assert len(mlflow.MlflowClient(mlflow_server).get_metric_history(runs[0].info.run_id, "val_acc")) == 1
