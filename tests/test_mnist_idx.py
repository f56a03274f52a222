"""Converting the official MNIST-format IDX files (gzipped or raw) into shards, and every defect named."""

import gzip

import numpy as np
import pytest
from idx_files import idx_bytes, write_mnist_folder

from stride.datamodules.manifest import read_manifest, verify_shards
from stride.datamodules.sources.mnist_idx import prepare_mnist_like
from stride.datamodules.streaming import decode_member, iter_shard
from stride.errors import StrideError


def read_split(root, split):
    manifest = read_manifest(root)
    images, labels = [], []
    for shard in manifest.split(split).shards:
        for _, members in iter_shard(root / shard.name, ("png", "cls")):
            images.append(decode_member("png", members["png"])[0])
            labels.append(decode_member("cls", members["cls"]))
    return np.stack(images), np.array(labels)


@pytest.mark.parametrize("gz", [True, False])
def test_round_trip_is_exact(tmp_path, gz):
    arrays = write_mnist_folder(tmp_path / "raw", train=250, test=60, gz=gz)
    manifest = prepare_mnist_like("mnist", tmp_path / "raw", tmp_path / "out", val_size=50, samples_per_shard=64)
    verify_shards(tmp_path / "out", manifest)
    assert {k: v.num_samples for k, v in manifest.splits.items()} == {"train": 200, "val": 50, "test": 60}
    assert [s.name for s in manifest.split("train").shards] == [f"train-{i:06d}.tar" for i in range(4)]
    assert manifest.sample_schema["png"]["shape"] == [1, 28, 28] and manifest.class_names[3] == "3"

    test_images, test_labels = read_split(tmp_path / "out", "test")
    np.testing.assert_array_equal(test_images, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(test_labels, arrays["t10k-labels-idx1-ubyte"])
    # train + val together are exactly the official training set, split deterministically
    train_images, _ = read_split(tmp_path / "out", "train")
    val_images, _ = read_split(tmp_path / "out", "val")
    official = {img.tobytes() for img in arrays["train-images-idx3-ubyte"]}
    assert {img.tobytes() for img in np.concatenate([train_images, val_images])} == official
    again = prepare_mnist_like("mnist", tmp_path / "raw", tmp_path / "out2", val_size=50, samples_per_shard=64)
    assert [s.sha256 for s in again.split("val").shards] == [s.sha256 for s in manifest.split("val").shards]


def test_torchvision_layout_and_sibling_datasets(tmp_path):
    write_mnist_folder(tmp_path / "root" / "FashionMNIST" / "raw", train=40, test=10)
    manifest = prepare_mnist_like("fashion-mnist", tmp_path / "root", tmp_path / "out", val_size=10)
    assert manifest.dataset == "fashion-mnist" and manifest.class_names[-1] == "Ankle boot"
    write_mnist_folder(tmp_path / "k", train=40, test=10, gz=False)
    assert prepare_mnist_like("kmnist", tmp_path / "k", tmp_path / "outk", val_size=10).class_names[0] == "o"


def corrupt(folder, name, data):
    (folder / f"{name}.gz").unlink()
    (folder / name).write_bytes(data)


def test_defects_are_named(tmp_path):
    raw = tmp_path / "raw"
    arrays = write_mnist_folder(raw, train=40, test=10)
    out = tmp_path / "out"

    (raw / "t10k-labels-idx1-ubyte.gz").rename(tmp_path / "moved.gz")
    with pytest.raises(StrideError, match="missing t10k-labels-idx1-ubyte"):
        prepare_mnist_like("mnist", raw, out, val_size=10)
    (tmp_path / "moved.gz").rename(raw / "t10k-labels-idx1-ubyte.gz")

    corrupt(raw, "train-images-idx3-ubyte", idx_bytes(arrays["train-labels-idx1-ubyte"]))
    with pytest.raises(StrideError,
                       match=r"train-images-idx3-ubyte: wrong IDX magic number 0x00000801, expected 0x00000803"):
        prepare_mnist_like("mnist", raw, out, val_size=10)

    (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(arrays["train-images-idx3-ubyte"])[:-100])
    with pytest.raises(StrideError, match="train-images-idx3-ubyte: truncated or padded: header says 40 x 28 x 28"):
        prepare_mnist_like("mnist", raw, out, val_size=10)

    (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(arrays["train-images-idx3-ubyte"][:39]))
    with pytest.raises(StrideError, match="has 39 images but .*train-labels-idx1-ubyte.gz has 40 labels"):
        prepare_mnist_like("mnist", raw, out, val_size=10)

    (raw / "train-images-idx3-ubyte").unlink()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(arrays["train-images-idx3-ubyte"]))[:-30])
    with pytest.raises(StrideError, match="train-images-idx3-ubyte.gz: cannot read"):
        prepare_mnist_like("mnist", raw, out, val_size=10)
    assert not out.exists()  # nothing half-written


def test_cli_reports_missing_source(tmp_path, capsys):
    from stride.pipelines.cli import main

    assert main(["data", "prepare", "mnist", "--out", str(tmp_path / "o")]) == 2
    assert "needs --source" in capsys.readouterr().err


def test_a_validation_split_eating_the_training_file_is_warned(tmp_path, capsys):
    """5,000 validation images from an 8,000-image file (the default) leaves 3,000: say so."""
    from stride.pipelines.cli import main

    write_mnist_folder(tmp_path / "raw", train=8000, test=10)
    assert main(["data", "prepare", "mnist", "--source", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                 "--shard-size", "4000"]) == 0
    out = capsys.readouterr().out
    assert "warning: validation holds 5000 of 8000 training samples (62%), leaving 3000 to train on" in out
    assert main(["data", "prepare", "mnist", "--source", str(tmp_path / "raw"), "--out", str(tmp_path / "ok"),
                 "--val-size", "800", "--shard-size", "4000"]) == 0
    assert "warning" not in capsys.readouterr().out
