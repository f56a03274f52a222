"""Shard writing is atomic, never destroys an existing dataset, and every defect is named."""

import json
import signal
import subprocess
import sys
import time

import pytest
from idx_files import write_mnist_folder

from stride.datamodules.image_classification import ImageClassificationData
from stride.datamodules.manifest import read_manifest, verify_shards
from stride.datamodules.sources.digits import prepare_digits
from stride.datamodules.writer import ShardWriter
from stride.errors import StrideError


def test_manifest_describes_the_dataset(digits_shards):
    manifest = read_manifest(digits_shards)
    assert manifest.format_version == 1 and manifest.dataset == "digits"
    assert {k: v.num_samples for k, v in manifest.splits.items()} == {"train": 1257, "val": 180, "test": 360}
    assert sum(s.num_samples for s in manifest.split("train").shards) == 1257
    assert manifest.sample_schema["png"] == {"role": "image", "shape": [1, 28, 28], "dtype": "uint8",
                                             "layout": "HW(C) image"}
    assert manifest.parameters["seed"] == 0 and len(manifest.stats["mean"]) == 1
    verify_shards(digits_shards, manifest)


def test_existing_dataset_needs_overwrite(tmp_path):
    out = tmp_path / "digits"
    first = prepare_digits(out, encoding="npy")
    with pytest.raises(StrideError, match="already exists.*--overwrite"):
        prepare_digits(out)
    assert read_manifest(out) == first
    second = prepare_digits(out, overwrite=True, samples_per_shard=500)
    assert len(second.split("train").shards) == 3 and read_manifest(out) == second
    assert [p.name for p in tmp_path.iterdir()] == ["digits"]  # no temporaries left behind


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with ShardWriter(out) as writer:
            writer.add("train", "a", {"cls": b"1"})
            raise RuntimeError("source broke midway")
    assert list(tmp_path.iterdir()) == []


def test_refuses_foreign_or_unwritable_folders(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(StrideError, match="not empty and holds no stride dataset"):
        prepare_digits(foreign)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(StrideError, match="cannot create output folder .*a-file"):
        prepare_digits(blocked / "digits")


def test_killed_prepare_leaves_no_partial_dataset(tmp_path):
    raw = tmp_path / "raw"
    write_mnist_folder(raw, train=20000, test=2000, gz=False)
    out = tmp_path / "mnist"
    script = ("from stride.datamodules.sources.mnist_idx import prepare_mnist_like as p;"
              f"p('mnist', {str(raw)!r}, {str(out)!r}, val_size=100, samples_per_shard=200)")
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob(".mnist.stride-tmp-*/train-000003.tar")):
        time.sleep(0.05)
    assert process.poll() is None, "prepare finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    assert list(tmp_path.glob(".mnist.stride-tmp-*"))  # the killed run's temporary folder, hidden
    manifest = prepare_mnist_like_small(raw, out)
    verify_shards(out, manifest)
    assert not list(tmp_path.glob(".mnist.stride-tmp-*"))  # cleaned up by the next prepare


def prepare_mnist_like_small(raw, out):
    from stride.datamodules.sources.mnist_idx import prepare_mnist_like

    return prepare_mnist_like("mnist", raw, out, val_size=100, samples_per_shard=5000)


def copy_dataset(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def test_corrupted_shard_is_named_before_training(digits_shards, tmp_path):
    root = copy_dataset(digits_shards, tmp_path / "digits")
    shard = root / "val-000000.tar"
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF
    shard.write_bytes(bytes(data))
    datamodule = ImageClassificationData(root, batch_size=32)
    with pytest.raises(StrideError, match="val-000000.tar: sha256 does not match"):
        datamodule.setup("fit")


def test_truncated_shard_names_shard_and_sample(digits_shards, tmp_path):
    root = copy_dataset(digits_shards, tmp_path / "digits")
    shard = root / "test-000000.tar"
    shard.write_bytes(shard.read_bytes()[:60_000])
    with pytest.raises(StrideError, match="test-000000.tar has .* bytes, the manifest says"):
        ImageClassificationData(root, batch_size=32).setup("test")
    unchecked = ImageClassificationData(root, batch_size=32, verify_checksums=False)
    unchecked._verified = True  # as if the shard broke after the check: streaming still names it
    with pytest.raises(StrideError, match=r"test-000000.tar is corrupted or truncated after sample 'test\d+'"):
        list(unchecked.test_dataloader())


def test_bad_manifests_are_named(digits_shards, tmp_path):
    root = copy_dataset(digits_shards, tmp_path / "digits")
    with pytest.raises(StrideError, match="no dataset at .*nowhere.*stride data prepare"):
        ImageClassificationData(tmp_path / "nowhere", batch_size=8)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["sha256"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StrideError, match="train-000000.tar: sha256 does not match"):
        ImageClassificationData(root, batch_size=8).setup("fit")
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(StrideError, match="manifest.json: not valid JSON"):
        read_manifest(root)
    del manifest["splits"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StrideError, match="invalid manifest at splits"):
        read_manifest(root)
