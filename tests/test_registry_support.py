"""Helpers shared by the registry tests (trained runs, CLI calls, registry snapshots), plus unit tests of the
pieces that need no server: the gate and the file conversion for predict."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from stride.errors import StrideError
from stride.pipelines.cli import main
from stride.registry.promotion import gate
from stride.serving import Evaluation, TensorSpec, get_serving
from stride.tasks import get_task

CLASSIFICATION = get_serving("classification")
CLASSIFICATION_TASK = get_task("classification")


def read_input(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    return CLASSIFICATION.read_input(path, TensorSpec(shape))

EXPERIMENT = "registry-tests"


@dataclass(frozen=True)
class TrainedRuns:
    worse: str  # run ids
    better: str  # weights only (tracking.log_model=deferred), as search trials log
    no_model: str  # a finished run with metrics but no logged model
    search: str  # parent run of a search whose trials are the three runs above
    experiment: str


@functools.cache
def trained_runs(tracking_uri: str, shards: Path, workdir: Path) -> TrainedRuns:
    """Two real training runs, a clearly worse and a better one, trained once per test session as the trials of
    a search (nested under its parent run and tagged with its id, as `stride tune` records them)."""
    from stride.config import load_config
    from stride.tracking.publish import publish_training
    from stride.tracking.recorder import RunRecorder
    from stride.tracking.run import MlflowRun
    from stride.tracking.store import ensure_experiment
    from stride.training import train

    def train_trial(config) -> str:
        with MlflowRun(tracking_uri, config, parent_run_id=search, tags=trial_tags) as run:
            recorder = RunRecorder(run)
            publish_training(run, train(config, callbacks=recorder.callbacks, loggers=recorder.loggers))
        return run.run_id

    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, EXPERIMENT)
    search = client.create_run(experiment_id, run_name="search").info.run_id
    trial_tags = {"stride.search_id": search}
    base = [f"data.path={shards}", "model.channels=8", "data.batch_size=128", "trainer.enable_progress_bar=false",
            f"trainer.checkpoint_dir={workdir / 'checkpoints'}", f"tracking.experiment={EXPERIMENT}"]
    worse = train_trial(load_config("digits-cnn", base + ["trainer.max_epochs=1", "optim.lr=0.0001"]))
    # logged as search trials are (weights only): promoting it exports its model
    better = train_trial(load_config("digits-cnn", base + ["trainer.max_epochs=2", "tracking.log_model=deferred"]))
    bare = client.create_run(experiment_id, tags={"stride.task": "classification", **trial_tags,
                                                  "mlflow.parentRunId": search}, run_name="no-model")
    client.log_metric(bare.info.run_id, "best_val_acc", 0.999)
    client.log_metric(bare.info.run_id, "val_acc", 0.999)
    client.set_terminated(bare.info.run_id, "FINISHED")
    client.set_terminated(search, "FINISHED")
    return TrainedRuns(worse, better, bare.info.run_id, search, EXPERIMENT)


@pytest.fixture(scope="module")
def runs(mlflow_server: str, digits_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRuns:
    return trained_runs(mlflow_server, digits_shards, tmp_path_factory.getbasetemp())


def stride(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """Run the `stride` CLI in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def registry_state(tracking_uri: str) -> dict[str, tuple]:
    """Everything promotion may change: models (locks included), their aliases and versions' tags."""
    client = MlflowClient(tracking_uri)
    state = {}
    for model in client.search_registered_models(max_results=1000):
        versions = client.search_model_versions(f"name = '{model.name}'")
        state[model.name] = (dict(model.aliases), sorted((v.version, tuple(sorted(v.tags.items()))) for v in versions))
    return state


def _evaluation(accuracy: float) -> Evaluation:
    return Evaluation("test", {"test_acc": accuracy, "test_loss": 0.0}, 100, "/d", "sha")


def test_gate_needs_a_strict_gain_of_at_least_min_delta():
    task = CLASSIFICATION_TASK
    assert gate(task, _evaluation(0.5), None, 0.0)[0]
    assert gate(task, _evaluation(0.91), _evaluation(0.90), 0.0)[0]
    assert not gate(task, _evaluation(0.90), _evaluation(0.90), 0.0)[0]  # a tie never replaces the champion
    assert not gate(task, _evaluation(0.91), _evaluation(0.90), 0.02)[0]
    passed, text = gate(task, _evaluation(0.80), _evaluation(0.90), 0.0)
    assert not passed and "0.8000" in text and "0.9000" in text and "test_acc" in text


def test_gate_reads_the_task_quality_and_its_direction():
    """A task whose quality is lower-is-better gates the other way, with no change to promotion code."""
    class LowerIsBetter(type(CLASSIFICATION_TASK)):
        quality, quality_mode = "loss", "min"

    def evaluation(loss: float) -> Evaluation:
        return Evaluation("test", {"test_acc": 0.5, "test_loss": loss}, 10, "/d", "sha")

    assert gate(LowerIsBetter(), evaluation(0.2), evaluation(0.3), 0.05)[0]
    assert not gate(LowerIsBetter(), evaluation(0.3), evaluation(0.2), 0.0)[0]


def test_images_of_any_size_become_the_model_input(tmp_path: Path):
    pixels = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    Image.fromarray(pixels).save(tmp_path / "same.png")
    Image.fromarray(pixels).convert("RGB").resize((90, 70)).save(tmp_path / "big.jpg")
    same = read_input(tmp_path / "same.png", (1, 28, 28))
    assert same.shape == (1, 28, 28) and same.dtype == np.float32
    np.testing.assert_allclose(same[0], pixels / 255.0, atol=1e-6)  # exactly what the shards decode to
    assert read_input(tmp_path / "big.jpg", (1, 28, 28)).shape == (1, 28, 28)
    assert read_input(tmp_path / "big.jpg", (3, 32, 32)).shape == (3, 32, 32)
    np.save(tmp_path / "raw.npy", pixels[None])
    np.testing.assert_allclose(read_input(tmp_path / "raw.npy", (1, 28, 28)), same, atol=1e-6)


@pytest.mark.parametrize("name, content, message", [
    ("flat.npy", np.zeros((28, 28), np.float32),
     r"flat.npy: array has shape \[28, 28\], the model expects \[1, 28, 28\]"),
    ("broken.png", b"not an image", r"broken.png: not a readable PNG image"),
    ("notes.txt", b"hello", r"notes.txt: unsupported file type .txt"),
])
def test_bad_files_are_named_with_what_was_expected(tmp_path: Path, name, content, message):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(StrideError, match=message):
        read_input(path, (1, 28, 28))


def test_images_cannot_feed_a_sequence_model(tmp_path: Path):
    Image.new("L", (8, 8)).save(tmp_path / "x.png")
    with pytest.raises(StrideError, match=r"x.png: the model takes inputs of shape \[2, 50\], not images"):
        read_input(tmp_path / "x.png", (2, 50))
