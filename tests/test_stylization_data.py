"""Stylization datasets (docs/datasets.md, "Stylization datasets"): content images from the built-in photographs, a
folder or COCO's image folders, style images stored beside the shards with their sha256, and the datamodule."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stride.datamodules.manifest import read_manifest
from stride.datamodules.sources.content_images import (
    SPLIT_PHOTOS,
    prepare_coco_images,
    prepare_image_folder,
    prepare_photos,
    read_content,
)
from stride.datamodules.sources.digits import prepare_digits
from stride.datamodules.stylization import StylizationData
from stride.datamodules.transfer import copy_dataset
from stride.errors import StrideError
from stride.pipelines.cli import main

SIDE = 32


def small_photos(out: Path, **options) -> Path:
    prepare_photos(out, image_size=SIDE, train_size=16, val_size=4, test_size=4, **options)
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return small_photos(tmp_path_factory.mktemp("photos") / "photos", style_size=48)


def write_image(path: Path, size_wh: tuple[int, int], seed: int, mode: str = "RGB") -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size_wh[1], size_wh[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def every_batch(data: StylizationData, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data.setup()
    batches = [data.on_after_batch_transfer(batch, 0) for batch in data.loader(split)]
    return torch.cat([images for images, _ in batches]), torch.cat([keys for _, keys in batches])


# -- the built-in photos -----------------------------------------------------------------------------------------
def test_photos_hold_content_images_and_the_four_builtin_styles(photos):
    manifest = read_manifest(photos)
    assert manifest.task == "stylization" and manifest.dataset == "photos"
    assert manifest.class_names == ["brick", "grass", "gravel", "stain"]
    assert {split: entry.num_samples for split, entry in manifest.splits.items()} == {"train": 16, "val": 4, "test": 4}
    assert manifest.sample_schema["png"]["shape"] == [3, SIDE, SIDE] and "cls" not in manifest.sample_schema
    assert len(manifest.stats["mean"]) == 3
    styles = manifest.parameters["styles"]
    assert [entry["file"] for entry in styles] == ["style-00-brick.png", "style-01-grass.png", "style-02-gravel.png",
                                                   "style-03-stain.png"]
    for entry in styles:
        assert hashlib.sha256((photos / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
        assert max(entry["size_hw"]) == 48  # the 512 x 512 textures shrunk to --style-size


def test_photos_validate_and_test_on_photographs_training_never_sees(photos):
    splits = read_manifest(photos).source["splits"]
    seen = {split: set(splits[split]["photographs"]) for split in ("train", "val", "test")}
    assert seen["train"].isdisjoint(seen["val"] | seen["test"]) and seen["val"].isdisjoint(seen["test"])
    assert {split: tuple(splits[split]["photographs"]) for split in seen} == SPLIT_PHOTOS
    assert splits["val"]["scenes"] == 1 and splits["train"]["scenes"] == 4  # a quarter are rendered scenes


def test_photos_are_the_same_for_the_same_seed(tmp_path, photos):
    again = small_photos(tmp_path / "again", style_size=48)
    other = small_photos(tmp_path / "other", style_size=48, seed=1)
    shards = {split: [s.sha256 for s in entry.shards] for split, entry in read_manifest(photos).splits.items()}
    assert {split: [s.sha256 for s in entry.shards] for split, entry in read_manifest(again).splits.items()} == shards
    assert [s.sha256 for s in read_manifest(other).split("train").shards] != shards["train"]


def test_batches_are_pixels_in_0_1_with_sample_indices(photos):
    data = StylizationData(photos, batch_size=4, normalize="dataset")  # the data option is taken and has no effect
    assert data.input_shape == (3, SIDE, SIDE) and data.num_classes == 4 and data.normalization is None
    assert data.class_names == ["brick", "grass", "gravel", "stain"]
    images, keys = every_batch(data, "val")
    assert images.dtype == torch.float32 and images.shape == (4, 3, SIDE, SIDE)
    assert 0 <= images.min() and images.max() <= 1 and images.max() > 0.5  # not normalised by the dataset's stats
    assert keys.dtype == torch.int64 and sorted(keys.tolist()) == [0, 1, 2, 3]  # every sample once
    train_images, _ = data.on_after_batch_transfer(next(iter(data.loader("train"))), 0)
    assert train_images.shape == (4, 3, SIDE, SIDE)


def test_a_decoded_cache_gives_the_same_batches(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("STRIDE_CACHE_DIR", str(tmp_path / "cache"))
    streamed = every_batch(StylizationData(photos, batch_size=3), "test")
    cached_data = StylizationData(photos, batch_size=3, cache="memory")
    cached_data.prepare_data()
    cached = every_batch(cached_data, "test")
    order, cached_order = streamed[1].argsort(), cached[1].argsort()
    assert torch.equal(streamed[0][order], cached[0][cached_order])


def test_style_images_are_rgb_arrays_read_once(photos):
    data = StylizationData(photos)
    styles = data.style_images()
    assert [style.shape for style in styles] == [(48, 48, 3)] * 4 and all(s.dtype == np.uint8 for s in styles)
    assert np.array_equal(styles[0][..., 0], styles[0][..., 2])  # brick is a grey texture made RGB
    assert not np.array_equal(styles[3][..., 0], styles[3][..., 2])  # stain is in colour
    assert data.style_images()[0] is styles[0]  # cached


def test_a_style_file_altered_after_prepare_is_refused_by_name(tmp_path):
    dataset = small_photos(tmp_path / "photos", styles="grass,stain", style_size=32)
    stored = dataset / "style-01-stain.png"
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer, format="PNG")
    stored.write_bytes(buffer.getvalue())
    with pytest.raises(StrideError, match=r"style-01-stain\.png: sha256 .* differs from the manifest"):
        StylizationData(dataset).style_images()
    stored.unlink()
    with pytest.raises(StrideError, match=r"style-01-stain\.png: missing"):
        StylizationData(dataset).style_images()


def test_unknown_style_names_list_the_builtins(tmp_path):
    with pytest.raises(StrideError, match="'starry' is neither a built-in style \\(brick, grass, gravel, stain\\)"):
        small_photos(tmp_path / "photos", styles="brick,starry")
    with pytest.raises(StrideError, match="without empty items"):
        small_photos(tmp_path / "photos", styles="brick,,grass")
    assert not (tmp_path / "photos").exists()


def test_other_datasets_are_refused_with_the_commands_that_make_one(tmp_path):
    prepare_digits(tmp_path / "digits", val_size=10, test_size=10)
    with pytest.raises(StrideError, match=r"digits: dataset task is 'classification', not 'stylization'; .*"
                                          r"stride data prepare photos \| image-folder \| coco-images"):
        StylizationData(tmp_path / "digits")


def test_a_copied_dataset_carries_its_style_files(photos, tmp_path):
    copy_dataset(photos, tmp_path / "copy")
    assert len(StylizationData(tmp_path / "copy").style_images()) == 4


# -- a folder of images ------------------------------------------------------------------------------------------
def test_content_images_are_the_centre_square_at_the_shorter_side(tmp_path):
    wide = np.zeros((40, 60, 3), np.uint8)
    wide[:, :10] = (255, 0, 0)
    wide[:, 10:50] = (0, 255, 0)
    wide[:, 50:] = (0, 0, 255)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    pixels = read_content(tmp_path / "wide.png", 20)
    assert pixels.shape == (3, 20, 20) and pixels.dtype == np.uint8
    inside = pixels[:, :, 1:-1]  # the outermost columns blend in a little of their neighbours, as resizing first would
    assert (inside[1] == 255).all() and (inside[0] == 0).all() and (inside[2] == 0).all()


def test_image_folder_skips_what_does_not_decode_and_takes_a_style_file(tmp_path, caplog):
    source = tmp_path / "mine"
    for index in range(7):
        suffix = ".png" if index % 2 else ".jpg"
        write_image(source / ("nested" if index > 3 else "") / f"photo{index}{suffix}", (48 + index, 40), index)
    (source / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (source / "notes.txt").write_text("not an image")
    write_image(source / ".hidden" / "skip.png", (40, 40), 9)
    style = write_image(tmp_path / "art" / "Starry night.png", (300, 150), 10, mode="L")
    manifest = prepare_image_folder(source, tmp_path / "data", styles=f"stain,{style}", image_size=SIDE,
                                    style_size=64, val_size=1, test_size=1)
    assert manifest.task == "stylization" and manifest.class_names == ["stain", "Starry_night"]
    assert manifest.skipped_samples == {"image file does not decode": 1}
    assert "broken.jpg" in caplog.text  # left out, never silently
    assert sum(entry.num_samples for entry in manifest.splits.values()) == 7
    assert min(entry.num_samples for entry in manifest.splits.values()) == 1
    held_out = manifest.source["splits"]["val"] + manifest.source["splits"]["test"]
    assert len(held_out) == 2 and "broken.jpg" not in held_out
    data = StylizationData(tmp_path / "data", batch_size=2)
    grey = data.style_images()[1]
    assert grey.shape == (32, 64, 3) and np.array_equal(grey[..., 0], grey[..., 1])  # longer side 64, RGB
    assert manifest.splits["train"].num_samples == 5
    images, keys = every_batch(data, "val")
    assert images.shape == (1, 3, SIDE, SIDE) and keys.tolist() == [0]


def test_style_files_are_never_enlarged(tmp_path):
    source = tmp_path / "mine"
    for index in range(3):
        write_image(source / f"{index}.png", (40, 40), index)
    small = write_image(tmp_path / "small.jpg", (30, 20), 5)
    prepare_image_folder(source, tmp_path / "data", styles=str(small), image_size=SIDE)
    assert StylizationData(tmp_path / "data").style_images()[0].shape == (20, 30, 3)


def test_a_folder_of_too_few_usable_images_is_refused_by_name(tmp_path):
    source = tmp_path / "few"
    write_image(source / "a.png", (40, 40), 0)
    write_image(source / "b.png", (40, 40), 1)
    with pytest.raises(StrideError, match=f"--source {source}: fewer than 3 usable"):
        prepare_image_folder(source, tmp_path / "data", image_size=SIDE)
    (source / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(StrideError, match=f"--source {source}: fewer than 3 usable"):
        prepare_image_folder(source, tmp_path / "data", image_size=SIDE)
    assert not (tmp_path / "data").exists()


# -- COCO's image folders ---------------------------------------------------------------------------------------
def test_coco_images_train_on_train2014_and_hold_out_val2014(tmp_path):
    source = tmp_path / "coco"
    for image_id in (9, 25, 30, 34):
        write_image(source / "train2014" / f"COCO_train2014_{image_id:012d}.jpg", (64, 48), image_id)
    for image_id in (42, 73, 74):
        write_image(source / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", (48, 64), image_id)
    manifest = prepare_coco_images(source, tmp_path / "data", image_size=SIDE, styles="gravel")
    assert {split: entry.num_samples for split, entry in manifest.splits.items()} == {"train": 4, "val": 1, "test": 2}
    assert manifest.source["year"] == "2014" and manifest.class_names == ["gravel"]
    assert manifest.parameters["style_size_px"] == 256
    with pytest.raises(StrideError, match="val2014: 3 images cannot give 2 to validation and 2 to test"):
        prepare_coco_images(source, tmp_path / "again", image_size=SIDE, val_size=2, test_size=2)
    (source / "val2014").rename(source / "val2017")
    with pytest.raises(StrideError, match=r"train2017: image folder missing \(beside .*val2017\)"):
        prepare_coco_images(source, tmp_path / "again", image_size=SIDE)


# -- the command line --------------------------------------------------------------------------------------------
def test_prepare_command_writes_photos(tmp_path, capsys):
    out = tmp_path / "photos"
    assert main(["data", "prepare", "photos", "--out", str(out), "--image-size", "24", "--train-size", "8",
                 "--val-size", "2", "--test-size", "2", "--styles", "brick", "--style-size", "32"]) == 0
    assert "photos (train 8, val 2, test 2" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["brick"] and manifest["sample_schema"]["png"]["shape"] == [3, 24, 24]
    assert main(["data", "prepare", "digits", "--out", str(tmp_path / "d"), "--styles", "brick"]) != 0
    assert "--styles is for photos, image-folder, coco-images, not digits" in capsys.readouterr().err
    assert main(["data", "prepare", "image-folder", "--out", str(tmp_path / "f")]) != 0
    assert "needs --source DIR of .jpg/.png images" in capsys.readouterr().err
