"""Sequence data: images read as sequences (sequential / permuted), user .npz sequences -> shards."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from stride.config import load_config
from stride.datamodules.manifest import read_manifest
from stride.datamodules.sequence_classification import SequenceClassificationData
from stride.datamodules.sequence_shards import prepare_sequences
from stride.errors import StrideError
from stride.lightning_modules.sequence_view import SequenceView, pixel_permutation
from stride.pipelines.cli import main
from stride.tasks import DataFacts, get_task


def test_sequential_view_is_row_major():
    images = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    sequence = SequenceView(12)(images)
    assert sequence.shape == (2, 1, 12)
    assert torch.equal(sequence[1, 0], images[1, 0].flatten())  # row 0 first, then row 1, ...


def test_permuted_view_is_one_fixed_permutation_from_its_seed():
    images = torch.rand(5, 1, 28, 28)
    view = SequenceView(784, permutation_seed=7)
    assert torch.equal(view(images), images.flatten(2)[:, :, pixel_permutation(784, 7)])
    assert sorted(view.order.tolist()) == list(range(784))  # a permutation: no pixel lost or repeated
    assert torch.equal(SequenceView(784, 7).order, view.order)
    assert not torch.equal(SequenceView(784, 8).order, view.order)
    assert "order" in view.state_dict()  # travels with checkpoints and the exported model


def build_network(config):
    task = get_task(config.task)
    return task.network(config, DataFacts.of(task.datamodule(config)))


def sequence_config(digits_shards: Path, *overrides: str):
    return load_config("tcn-digits", [f"data.path={digits_shards}", "model.channels=4", "model.num_blocks=2",
                                      *overrides])


def test_permutation_is_the_same_for_train_val_and_test(digits_shards):
    """One network (and so one permutation buffer) sees every split; rebuilding from the config repeats it."""
    config = sequence_config(digits_shards, "data.sequence_view=permuted", "data.permutation_seed=3")
    datamodule = get_task(config.task).datamodule(config)
    first, second = build_network(config), build_network(config)
    views = [m for m in first.modules() if isinstance(m, SequenceView)]
    assert len(views) == 1 and views[0].permuted
    assert torch.equal(views[0].order, pixel_permutation(784, 3))
    assert torch.equal(views[0].order, next(m for m in second.modules() if isinstance(m, SequenceView)).order)
    images, _ = next(iter(datamodule.loader("test")))
    assert first(images.float() / 255).shape == (len(images), 10)


def test_short_receptive_field_is_warned(digits_shards, caplog):
    config = sequence_config(digits_shards, "model.kernel_size=2", "model.dilation_schedule=constant")
    with caplog.at_level(logging.WARNING):
        build_network(config)
    assert "receptive field of tcn is 5 steps but sequences have 784" in caplog.text
    caplog.clear()
    config = sequence_config(digits_shards, "model.num_blocks=8", "model.dilation_schedule=exponential")
    with caplog.at_level(logging.WARNING):
        build_network(config)
    assert "receptive field" not in caplog.text


def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def read_all(dataset: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    # 26 train samples: no partial batch dropped
    data = SequenceClassificationData(dataset, batch_size=2, normalize="none")
    data.setup("test")
    batches = list(data.loader(split))
    return (torch.cat([x for x, _ in batches]).numpy(), torch.cat([y for _, y in batches]).numpy())


@pytest.mark.parametrize("shape", [(40, 16), (40, 3, 16)])
def test_npz_round_trip(tmp_path, shape):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=shape).astype(np.float32), rng.integers(0, 4, size=40)
    manifest = prepare_sequences(write_npz(tmp_path / "seq.npz", x=x, y=y), tmp_path / "seq", val_fraction=0.1,
                                 test_fraction=0.25, samples_per_shard=8)
    channels = 1 if len(shape) == 2 else shape[1]
    assert manifest.task == "sequence_classification"
    assert manifest.sample_schema["npy"]["shape"] == [channels, 16]
    assert {s: manifest.splits[s].num_samples for s in ("train", "val", "test")} == {"train": 26, "val": 4, "test": 10}
    recovered = [read_all(tmp_path / "seq", split) for split in ("train", "val", "test")]
    all_x = np.concatenate([r[0] for r in recovered]).reshape(40, -1)
    all_y = np.concatenate([r[1] for r in recovered])
    # every sequence exactly once, values and labels intact (match rows by content)
    order = [int(np.flatnonzero((x.reshape(40, -1) == row).all(axis=1))[0]) for row in all_x]
    assert sorted(order) == list(range(40))
    assert np.array_equal(all_y, y[order])


@pytest.mark.slow
def test_npz_explicit_splits_and_class_names_train_end_to_end(tmp_path, mlflow_server):
    rng = np.random.default_rng(1)

    def split(n):  # class = sign of the mean: learnable from any receptive field covering the sequence
        x = rng.normal(size=(n, 2, 24)).astype(np.float32)
        x[: n // 2] += 1.5
        return x, (np.arange(n) >= n // 2).astype(np.int64)

    (xt, yt), (xv, yv), (xs, ys) = split(64), split(16), split(32)
    source = write_npz(tmp_path / "seq.npz", x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys,
                       class_names=np.array(["up", "down"]))
    assert main(["data", "prepare", "sequences", "--source", str(source), "--out", str(tmp_path / "seq")]) == 0
    assert read_manifest(tmp_path / "seq").class_names == ["up", "down"]
    config = load_config("tcn-digits", [f"data.path={tmp_path / 'seq'}", "model.channels=8", "model.num_blocks=3",
                                        "model.kernel_size=3", "trainer.max_epochs=6", "data.batch_size=16",
                                        "optim.lr=0.01", "schedule.warmup=none",
                                        f"trainer.checkpoint_dir={tmp_path / 'ckpt'}",
                                        "trainer.enable_progress_bar=false",
                                        "tracking.experiment=tests-sequences", "tracking.log_model=false"])
    from stride.pipelines.train import train_and_record as train

    result = train(config, tracking_uri=mlflow_server)
    assert result.test_metrics["test_acc"] > 0.8


@pytest.mark.parametrize("arrays,message", [
    (dict(x=np.zeros((10, 5), np.float32), y=np.zeros(9, np.int64)), "y must be a vector of 10 labels"),
    (dict(x=np.zeros((10, 5), np.float32), y=np.zeros(10, np.float32)), "must hold integer labels, got dtype float32"),
    (dict(x=np.zeros((10, 5), np.float32), y=-np.ones(10, np.int64)), r"holds a negative label \(-1 at index 0\)"),
    (dict(x=np.zeros((10,), np.float32), y=np.zeros(10, np.int64)), r"shape \[N, T\] or \[N, C, T\]"),
    (dict(x=np.full((10, 5), np.nan, np.float32), y=np.zeros(10, np.int64)), "NaN"),
    (dict(inputs=np.zeros((10, 5)), labels=np.zeros(10)), "expected arrays x and y"),
    (dict(x_train=np.zeros((8, 5)), y_train=np.zeros(8, np.int64), x_val=np.zeros((2, 6)), y_val=np.zeros(2, np.int64),
          x_test=np.zeros((2, 5)), y_test=np.zeros(2, np.int64)), "same \\[C, T\\]"),
    (dict(x=np.zeros((3, 5)), y=np.zeros(3, np.int64)), "cannot be split"),
    (dict(x_train=np.zeros((1, 5)), y_train=np.zeros(1, np.int64), x_test=np.zeros((2, 5)),
          y_test=np.zeros(2, np.int64)), "1 training sequences cannot give a validation split"),
])
def test_bad_sequence_files_name_the_file_and_array(tmp_path, arrays, message):
    source = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(StrideError, match=message) as error:
        prepare_sequences(source, tmp_path / "out")
    assert str(source) in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing written


def test_pickled_arrays_are_refused(tmp_path):
    source = tmp_path / "pickled.npz"
    np.savez(source, x=np.array([{"evil": 1}] * 4, dtype=object), y=np.zeros(4, np.int64))
    with pytest.raises(StrideError, match="pickle"):
        prepare_sequences(source, tmp_path / "out")


def test_cli_needs_a_source_file(tmp_path, capsys):
    assert main(["data", "prepare", "sequences", "--out", str(tmp_path / "out")]) == 2
    assert "needs --source FILE.npz" in capsys.readouterr().err
    assert main(["data", "prepare", "sequences", "--source", str(tmp_path / "none.npz"), "--out", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_sequence_task_on_sequence_manifest_and_mismatch(tmp_path, digits_shards):
    x, y = np.zeros((20, 1, 8), np.float32), np.arange(20) % 2
    prepare_sequences(write_npz(tmp_path / "s.npz", x=x, y=y), tmp_path / "seq")
    config = load_config("tcn-digits", [f"data.path={tmp_path / 'seq'}", "model.num_blocks=2"])
    assert isinstance(get_task(config.task).datamodule(config), SequenceClassificationData)
    image_task = load_config("digits-cnn", [f"data.path={tmp_path / 'seq'}"])
    with pytest.raises(StrideError, match=r"dataset task is 'sequence_classification'.*recipes .*tcn-digits.*"
                                          r"architectures dilated_gru, gru, lstm, tcn"):
        get_task(image_task.task).datamodule(image_task)
    permuted = load_config("tcn-digits", [f"data.path={tmp_path / 'seq'}", "data.sequence_view=permuted"])
    with pytest.raises(StrideError, match="data.sequence_view=permuted: .* already holds sequences"):
        get_task(permuted.task).datamodule(permuted)
    json.loads((tmp_path / "seq" / "manifest.json").read_text())


def test_train_and_test_arrays_get_a_validation_split_from_the_training_arrays(tmp_path):
    """The common x_train/y_train/x_test/y_test layout; the manifest records only the settings used."""
    x_train, y_train = np.arange(40 * 6, dtype=np.float32).reshape(40, 6), np.arange(40) % 2
    x_test, y_test = np.zeros((7, 6), np.float32), np.arange(7) % 2
    manifest = prepare_sequences(write_npz(tmp_path / "tt.npz", x_train=x_train, y_train=y_train, x_test=x_test,
                                           y_test=y_test), tmp_path / "out", val_fraction=0.25)
    assert {k: v.num_samples for k, v in manifest.splits.items()} == {"train": 30, "val": 10, "test": 7}
    assert manifest.parameters == {"val_fraction": 0.25, "seed": 0, "samples_per_shard": 5000}
    train, _ = read_all(tmp_path / "out", "train")
    val, _ = read_all(tmp_path / "out", "val")
    assert sorted(np.concatenate([train, val])[:, 0, 0].tolist()) == x_train[:, 0].tolist()  # carved, not lost
    explicit = prepare_sequences(write_npz(tmp_path / "all.npz", x_train=x_train, y_train=y_train, x_val=x_test,
                                           y_val=y_test, x_test=x_test, y_test=y_test), tmp_path / "all")
    assert explicit.parameters == {"samples_per_shard": 5000}  # no fraction or seed shaped these splits
