"""Detection data: exact letterboxing, boxes that follow the faces through augmentation, multi-scale
batches, every evaluation sample once across ranks, deterministic per seed."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning.utilities import move_data_to_device

from stride.datamodules.detection import DetectionBatcher, DetectionData, face_boxes, letterbox_scale, letterbox_size
from stride.datamodules.writer import ShardWriter
from stride.errors import StrideError

FACE_RGB = (250, 245, 240)  # bright faces on dark noise: a pixel's brightness says whether it is face
SIZES = [(60, 90), (80, 50), (64, 64), (45, 100)]  # (height, width): landscape, portrait, square
SPLITS = {"train": 8, "val": 3, "test": 5}
SIDE = 48


def face_image(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, list[list[int]]]:
    """Dark noise with 1-3 bright rectangles at least 12 px apart, and their [x, y, w, h]."""
    pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    boxes, x = [], 2
    while len(boxes) < 3 and x + 14 <= width - 2:
        w, h = int(rng.integers(14, 22)), int(rng.integers(14, min(24, height - 4)))
        if x + w > width - 2:
            break
        y = int(rng.integers(2, height - h - 1))
        pixels[y:y + h, x:x + w] = FACE_RGB
        boxes.append([x, y, w, h])
        x += w + 12
    return pixels, boxes


def sample(index: int, rng: np.random.Generator) -> tuple[dict[str, bytes], dict]:
    height, width = SIZES[index % len(SIZES)]
    pixels, boxes = face_image(height, width, rng)
    boxes += [[5, 5, 0, 7], [3, 3, 9, 9]]  # a zero-width face and one marked untrainable: no training targets
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, subsampling=0)
    n = len(boxes)
    annotation = {"file": f"0--Tiny/{index}.jpg", "event": "0--Tiny", "width": width, "height": height,
                  "boxes": boxes, "blur": [0] * n, "expression": [0] * n, "illumination": [0] * n,
                  "invalid": [0] * n, "occlusion": [0] * n, "pose": [0] * n,
                  "trainable": [True] * (n - 2) + [False, False]}
    return {"jpg": buffer.getvalue(), "json": json.dumps(annotation).encode()}, annotation


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """Three splits of real JPEGs in 5 shards; returns (root, key -> annotation)."""
    root = tmp_path_factory.mktemp("faces") / "tiny-faces"
    rng = np.random.default_rng(0)
    annotations = {}
    with ShardWriter(root, samples_per_shard=4) as writer:
        for split, count in SPLITS.items():
            for index in range(count):
                key = f"{split}{index:04d}"
                members, annotations[key] = sample(index, rng)
                writer.add(split, key, members)
        writer.commit(dataset="tiny-faces", task="detection", source={"kind": "test"}, parameters={},
                      sample_schema={"jpg": {"role": "image"}, "json": {"role": "annotation"}},
                      class_names=["face"], stats={"mean": [0.2] * 3, "std": [0.3] * 3})
    return root, annotations


def data(root: Path, **kwargs) -> DetectionData:
    return DetectionData(root, **{"batch_size": 2, "eval_batch_size": 3, "image_size": SIDE, "pin_memory": False,
                                  **kwargs})


def batches(datamodule: DetectionData, split: str) -> list:
    return [datamodule.on_after_batch_transfer(batch, 0) for batch in datamodule.loader(split)]


def is_face(image: torch.Tensor) -> torch.Tensor:
    return image.mean(0) > 0.6  # H x W


def check_boxes_on_faces(image: torch.Tensor, boxes: torch.Tensor, scale: float) -> None:
    """Inside every box (inset by the resampling blur) is face; a ring just outside it is not."""
    face = is_face(image)
    margin = int(np.ceil(1.5 * scale + 1))
    for x1, y1, x2, y2 in boxes.round().int().tolist():
        inner = face[y1 + margin:y2 - margin, x1 + margin:x2 - margin]
        if inner.numel():
            assert inner.float().mean() > 0.9, (x1, y1, x2, y2)
        ring = torch.zeros_like(face)
        ring[max(0, y1 - 2 * margin):y2 + 2 * margin, max(0, x1 - 2 * margin):x2 + 2 * margin] = True
        ring[max(0, y1 - margin):y2 + margin, max(0, x1 - margin):x2 + margin] = False
        if ring.any():
            assert face[ring].float().mean() < 0.2, (x1, y1, x2, y2)


def test_evaluation_letterboxes_exactly(faces):
    root, annotations = faces
    datamodule = data(root)
    assert datamodule.input_shape == (3, SIDE, SIDE) and datamodule.num_classes == 1
    assert datamodule.normalization == ([0.2] * 3, [0.3] * 3)
    seen = 0
    for images, targets in batches(datamodule, "test"):
        assert images.dtype == torch.float32 and images.shape[1:] == (3, SIDE, SIDE) and images.max() <= 1
        for image, target in zip(images, targets):
            annotation = annotations[target["key"]]
            assert target["annotation"] == annotation
            height, width = annotation["height"], annotation["width"]
            assert target["scale"] == letterbox_scale(height, width, SIDE) == SIDE / max(height, width)
            fitted_h, fitted_w = letterbox_size(height, width, SIDE)
            assert max(fitted_h, fitted_w) == SIDE
            assert image[:, fitted_h:].abs().sum() == 0 and image[:, :, fitted_w:].abs().sum() == 0  # bottom/right pad
            trainable = [b for b, keep in zip(annotation["boxes"], annotation["trainable"]) if keep]
            expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in trainable], dtype=torch.float32)
            assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (len(trainable), 4)
            # the untrainable face is not a target; the others are the original boxes times scale, to the half
            # pixel by which rounding the letterbox's shorter side to whole pixels stretches it
            torch.testing.assert_close(target["boxes"], expected * target["scale"], atol=0.5, rtol=0)
            check_boxes_on_faces(image, target["boxes"], target["scale"])
            seen += 1
    assert seen == SPLITS["test"]


def test_every_evaluation_sample_once_across_two_ranks(faces):
    root, annotations = faces
    for split in ("val", "test"):  # val: fewer shards than ranks (strided); test: a shard per rank
        keys = []
        for rank in range(2):
            datamodule = data(root)
            datamodule._rank_and_world = lambda rank=rank: (rank, 2)
            keys.append([t["key"] for _, targets in batches(datamodule, split) for t in targets])
        assert keys[0] and keys[1] and not set(keys[0]) & set(keys[1])
        assert sorted(keys[0] + keys[1]) == sorted(k for k in annotations if k.startswith(split))


def test_training_augmentation_keeps_boxes_on_the_faces(faces):
    root, _ = faces
    datamodule = data(root, random_crop=True, horizontal_flip=True)
    cropped = faces_seen = 0
    for _ in range(4):  # epochs
        for images, targets in batches(datamodule, "train"):
            assert images.shape[1:] == (3, SIDE, SIDE)
            for image, target in zip(images, targets):
                original = target["annotation"]
                cropped += target["scale"] > letterbox_scale(original["height"], original["width"], SIDE) + 1e-6
                boxes = target["boxes"]
                assert len(boxes) > 0  # a crop that would lose every face is redrawn
                assert ((boxes[:, 2:] - boxes[:, :2]) >= 1).all()  # degenerate faces removed
                assert (boxes >= 0).all() and (boxes <= SIDE).all()
                check_boxes_on_faces(image, boxes, target["scale"])
                faces_seen += len(boxes)
    assert cropped > 0 and faces_seen > 0


def test_flip_mirrors_the_boxes():
    rng = np.random.default_rng(1)
    pixels, boxes = face_image(60, 90, rng)
    annotation = {"boxes": boxes, "trainable": [True] * len(boxes), "width": 90, "height": 60}
    samples = [("a", pixels.transpose(2, 0, 1), annotation)]
    plain = DetectionBatcher(training=False, image_size=SIDE)(samples)
    flipping = DetectionBatcher(training=True, image_size=SIDE, horizontal_flip=True, seed=5)
    fitted_w = letterbox_size(60, 90, SIDE)[1]
    straight = mirrored = 0
    for epoch in range(12):
        flipping.start_pass(epoch, 0, 0)
        images, targets = flipping(samples)
        if torch.equal(targets[0]["boxes"], plain[1][0]["boxes"]):
            straight += 1
            assert torch.equal(images, plain[0])
            continue
        x1, y1, x2, y2 = plain[1][0]["boxes"].unbind(1)
        torch.testing.assert_close(targets[0]["boxes"], torch.stack([fitted_w - x2, y1, fitted_w - x1, y2], 1))
        flipped_back = images[0, :, :, :fitted_w].flip(-1).int()
        assert (flipped_back - plain[0][0, :, :, :fitted_w].int()).abs().max() <= 2
        mirrored += 1
    assert straight and mirrored


def test_colour_jitter_changes_pixels_not_boxes():
    pixels, boxes = face_image(60, 90, np.random.default_rng(2))
    samples = [("a", pixels.transpose(2, 0, 1), {"boxes": boxes, "trainable": [True] * len(boxes)})]
    plain = DetectionBatcher(training=True, image_size=SIDE)(samples)
    jittered = DetectionBatcher(training=True, image_size=SIDE, color_jitter=0.5)(samples)
    assert torch.equal(plain[1][0]["boxes"], jittered[1][0]["boxes"])
    assert not torch.equal(plain[0], jittered[0])


def test_multi_scale_batches_pick_sides_from_the_list_same_on_every_rank(faces):
    root, _ = faces
    sizes = (32, 48, 64)
    per_rank = []
    for rank in range(2):
        datamodule = data(root, train_sizes=sizes, image_size=40)
        datamodule._rank_and_world = lambda rank=rank: (rank, 2)
        per_rank.append([images.shape[-1] for _ in range(6) for images, _ in batches(datamodule, "train")])
        assert datamodule.input_shape == (3, 40, 40)  # what evaluation and export use
        assert all(images.shape[-1] == 40 for images, _ in batches(datamodule, "val"))
    assert set(per_rank[0]) <= set(sizes) and len(set(per_rank[0])) > 1
    assert per_rank[0] == per_rank[1]  # DDP ranks step at the same size


def test_training_batches_are_deterministic_for_a_seed(faces):
    root, _ = faces

    def run(seed: int) -> list:
        datamodule = data(root, seed=seed, train_sizes=(32, 48), color_jitter=0.3)
        return [batch for _ in range(2) for batch in batches(datamodule, "train")]

    first, again, other = run(3), run(3), run(4)
    for (images, targets), (images_again, targets_again) in zip(first, again):
        assert torch.equal(images, images_again)
        assert [t["key"] for t in targets] == [t["key"] for t in targets_again]
        assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(targets, targets_again))
    assert any(a[0].shape != b[0].shape or not torch.equal(a[0], b[0]) for a, b in zip(first, other))


def test_batches_travel_to_workers_and_devices(faces):
    root, _ = faces
    datamodule = data(root, num_workers=2)
    # spawned workers receive it pickled; our own object, pickled and loaded in this process
    stream = pickle.loads(pickle.dumps(datamodule.stream("train")))
    assert isinstance(stream.to_batch, DetectionBatcher) and stream.to_batch.training
    images, targets = next(iter(datamodule.loader("val")))
    assert images.dtype == torch.uint8  # uint8 through the loader, floats after the transfer
    moved_images, moved = move_data_to_device((images, targets), torch.device("cpu"))
    assert torch.equal(moved_images, images)
    assert [t["key"] for t in moved] == [t["key"] for t in targets] and isinstance(moved[0]["annotation"], dict)
    assert isinstance(moved[0]["scale"], float) and torch.equal(moved[0]["boxes"], targets[0]["boxes"])


def test_cache_and_bad_annotations_are_refused(faces):
    root, _ = faces
    with pytest.raises(StrideError, match="data.cache=memory: detection samples vary in size.*data.cache: none"):
        data(root, cache="memory")
    with pytest.raises(StrideError, match="'k1': json has 2 boxes but 1 'trainable' flags"):
        face_boxes({"boxes": [[0, 0, 4, 4], [1, 1, 2, 2]], "trainable": [True]}, "k1")
    with pytest.raises(StrideError, match="'k2': the json member needs 'boxes' and 'trainable'"):
        face_boxes({"boxes": []}, "k2")
    with pytest.raises(StrideError, match="data.image_size and data.train_sizes must be positive"):
        data(root, train_sizes=(0,))
