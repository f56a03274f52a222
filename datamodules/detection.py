"""Lightning datamodule for face detection over shards from `stride data prepare wider-face` / `faces`.

Images vary in size, so every one is letterboxed into an S x S square: resized keeping its aspect
ratio (longest side S) and padded with zeros at the bottom and right, which keeps box coordinates
a plain multiple of the original ones (`x / scale` maps a prediction back). Training first
augments each image with its boxes, in the loader workers (torchvision.transforms.v2 moves the
boxes with the pixels): a random square crop, a horizontal flip, colour jitter (docs/models.md,
A3), and may pick S per batch from `train_sizes` (001's 512/576/640 multi-scale training).

The randomness of a training batch is a function of (seed, epoch, rank, loader worker, batch
index) only, drawn from its own generator: runs repeat exactly, and torch's global generator
(model initialisation, dropout) is never touched. The side S of a batch leaves the rank out, so
all DDP ranks compute the same step at the same size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from stride.datamodules.sharded import ShardedDataModule
from stride.datamodules.streaming import KEY_FIELD, ShardStream
from stride.errors import StrideError

# a training crop is a square whose side is this fraction of the image's shorter side (RetinaFace,
# Deng et al. 2020, crops its training patches the same way); a face is kept if its centre stays inside
CROP_SIDE_FRACTION = (0.3, 1.0)
CROP_TRIES = 10  # crops that would lose every face are redrawn; after this many, the whole image is used
TRAIN_MIN_FACE_PX = 1.0  # a training target narrower or shorter than a pixel cannot be matched by any anchor
# evaluation keeps every face still on the image, however small the letterbox makes it
EVAL_MIN_FACE_PX = 1e-6
Target = dict[str, Any]


def letterbox_scale(height: int, width: int, side: int) -> float:
    """Letterboxed pixels per original pixel: the longest side becomes `side`."""
    return side / max(height, width)


def letterbox_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(height, width) of the image inside the `side` x `side` letterbox."""
    scale = letterbox_scale(height, width, side)
    return max(1, round(height * scale)), max(1, round(width * scale))


def face_boxes(annotation: Any, key: str) -> torch.Tensor:
    """x1, y1, x2, y2 (float32, k x 4) of the sample's trainable faces; others are no target."""
    if not isinstance(annotation, dict) or "boxes" not in annotation or "trainable" not in annotation:
        raise StrideError(f"sample {key!r}: the json member needs 'boxes' and 'trainable' (a detection annotation)")
    try:
        boxes = np.asarray(annotation["boxes"], dtype=np.float32).reshape(-1, 4)
        trainable = np.asarray(annotation["trainable"], dtype=bool).reshape(-1)
    except (TypeError, ValueError):
        raise StrideError(f"sample {key!r}: json 'boxes' must be [[x, y, w, h], ...] and 'trainable' one bool "
                          "per face") from None
    if len(trainable) != len(boxes):
        raise StrideError(f"sample {key!r}: json has {len(boxes)} boxes but {len(trainable)} 'trainable' flags")
    kept = boxes[trainable]
    return torch.from_numpy(np.concatenate([kept[:, :2], kept[:, :2] + kept[:, 2:]], axis=1))


def rgb_image(pixels: np.ndarray, key: str) -> tv_tensors.Image:
    """The decoded uint8 C x H x W image as 3 channels (grey ones repeated)."""
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3) or pixels.dtype != np.uint8:
        raise StrideError(f"sample {key!r}: expected an 8-bit grey or RGB JPEG, got {pixels.dtype} pixels of shape "
                          f"{list(pixels.shape)} (CMYK or 16-bit images must be converted to RGB)")
    image = torch.from_numpy(np.require(pixels, requirements=["C", "W"]))  # writable: no torch warning
    return tv_tensors.Image(image.expand(3, -1, -1) if image.shape[0] == 1 else image)


def random_square_crop(image: tv_tensors.Image, boxes: tv_tensors.BoundingBoxes, rng: np.random.Generator
                       ) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes]:
    """A random square of part of the image, with the faces whose centre it holds."""
    height, width = image.shape[-2:]
    centres = (boxes[:, :2] + boxes[:, 2:]).as_subclass(torch.Tensor).numpy() / 2
    for _ in range(CROP_TRIES):
        side = max(1, int(min(height, width) * rng.uniform(*CROP_SIDE_FRACTION)))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        inside = ((centres[:, 0] >= left) & (centres[:, 0] < left + side)
                  & (centres[:, 1] >= top) & (centres[:, 1] < top + side))
        if inside.any() or len(centres) == 0:
            kept = tv_tensors.wrap(boxes[torch.from_numpy(inside)], like=boxes)
            return F.crop(image, top, left, side, side), F.crop(kept, top, left, side, side)
    return image, boxes


def jitter_colours(image: tv_tensors.Image, strength: float, rng: np.random.Generator) -> tv_tensors.Image:
    """Brightness, contrast and saturation each scaled by a factor in [1 - s, 1 + s], in random order
    (what v2.ColorJitter(s, s, s) does, drawn from `rng`)."""
    adjustments = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    for index in rng.permutation(len(adjustments)):
        image = adjustments[index](image, float(rng.uniform(max(0.0, 1 - strength), 1 + strength)))
    return image


def letterbox(image: tv_tensors.Image, boxes: tv_tensors.BoundingBoxes, side: int
              ) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes, float]:
    """The image resized to fit `side` x `side` (not yet padded), its boxes, and the scale used."""
    height, width = image.shape[-2:]
    size = list(letterbox_size(height, width, side))
    resized = F.resize(image, size, antialias=True)
    return resized, F.clamp_bounding_boxes(F.resize(boxes, size)), letterbox_scale(height, width, side)


class DetectionBatcher:
    """Decoded (key, jpg, json) samples -> (uint8 images N x 3 x S x S, targets), in the loader workers.

    A module-level class, not a bound method: workers may be spawned, and pickling a method would
    drag the datamodule along. Its stream calls `start_pass` before each pass over the data.
    """

    def __init__(self, *, training: bool, image_size: int, train_sizes: tuple[int, ...] = (),
                 horizontal_flip: bool = False, random_crop: bool = False, color_jitter: float = 0.0, seed: int = 0):
        self.training = training
        self.image_size = image_size
        self.train_sizes = tuple(train_sizes)
        self.horizontal_flip = horizontal_flip
        self.random_crop = random_crop
        self.color_jitter = color_jitter
        self.seed = seed
        self._pass = (0, 0, 0)  # epoch, rank, worker
        self._batch_index = 0

    def start_pass(self, epoch: int, rank: int, worker: int) -> None:
        self._pass = (epoch, rank, worker)
        self._batch_index = 0

    def batch_side(self, epoch: int, worker: int, batch_index: int) -> int:
        if not (self.training and self.train_sizes):
            return self.image_size
        rng = np.random.default_rng([self.seed, epoch, worker, batch_index])  # no rank: the same on every rank
        return int(self.train_sizes[rng.integers(len(self.train_sizes))])

    def __call__(self, samples: list[tuple[str, np.ndarray, dict[str, Any]]]) -> tuple[torch.Tensor, list[Target]]:
        epoch, rank, worker = self._pass
        side = self.batch_side(epoch, worker, self._batch_index)
        rng = np.random.default_rng([self.seed, epoch, rank, worker, self._batch_index]) if self.training else None
        self._batch_index += 1
        images = torch.zeros(len(samples), 3, side, side, dtype=torch.uint8)
        targets = []
        for slot, (key, pixels, annotation) in enumerate(samples):
            image, boxes, scale = self.transform(key, pixels, annotation, side, rng)
            images[slot, :, :image.shape[-2], :image.shape[-1]] = image
            targets.append({"boxes": boxes.as_subclass(torch.Tensor).float(), "scale": scale, "key": key,
                            "annotation": annotation})
        return images, targets

    def transform(self, key: str, pixels: np.ndarray, annotation: Any, side: int, rng: np.random.Generator | None
                  ) -> tuple[torch.Tensor, tv_tensors.BoundingBoxes, float]:
        """One sample's letterboxed image (unpadded), its target boxes, and batch pixels per original pixel."""
        image = rgb_image(pixels, key)
        boxes = tv_tensors.BoundingBoxes(face_boxes(annotation, key), format="XYXY",
                                         canvas_size=tuple(image.shape[-2:]))
        if rng is not None and self.random_crop:
            image, boxes = random_square_crop(image, boxes, rng)
        if rng is not None and self.horizontal_flip and rng.random() < 0.5:
            image, boxes = F.horizontal_flip(image), F.horizontal_flip(boxes)
        image, boxes, scale = letterbox(image, boxes, side)
        if rng is not None and self.color_jitter > 0:
            image = jitter_colours(image, self.color_jitter, rng)
        min_px = TRAIN_MIN_FACE_PX if rng is not None else EVAL_MIN_FACE_PX
        boxes, _ = F.sanitize_bounding_boxes(boxes, min_size=min_px, min_area=min_px * min_px)
        return image.as_subclass(torch.Tensor), boxes, scale


class DetectionStream(ShardStream):
    """A ShardStream that tells its batcher which (epoch, rank, loader worker) each pass belongs to."""

    def __iter__(self):
        info = get_worker_info()
        self.to_batch.start_pass(self.epoch, self.rank, info.id if info is not None else 0)
        yield from super().__iter__()  # reads the same self.epoch, then advances it


class DetectionData(ShardedDataModule):
    """Batches of (images float32 N x 3 x S x S in [0, 1], targets: one dict per image with "boxes"
    float32 (k, 4) x1, y1, x2, y2 in batch pixels, "scale", "key" and "annotation" (the json member))."""

    task = "detection"
    fields = (KEY_FIELD, "jpg", "json")
    cacheable = False  # images vary in size: they always stream from the shards

    def __init__(self, path: str | Path, *, image_size: int = 512, train_sizes: tuple[int, ...] = (),
                 horizontal_flip: bool = True, random_crop: bool = True, color_jitter: float = 0.0, **kwargs: Any):
        super().__init__(path, **kwargs)
        sides = (image_size, *train_sizes)
        if not all(isinstance(s, int) and s > 0 for s in sides):
            raise StrideError(f"data.image_size and data.train_sizes must be positive integers, got {list(sides)}")
        if not 0 <= color_jitter <= 1:
            raise StrideError(f"data.augment.color_jitter must be in [0, 1], got {color_jitter}")
        self.image_size = image_size
        self.train_sizes = tuple(train_sizes)
        self.horizontal_flip = horizontal_flip
        self.random_crop = random_crop
        self.color_jitter = color_jitter

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int:
        return 1  # faces against background

    def batcher(self, split: str) -> DetectionBatcher:
        return DetectionBatcher(training=split == "train", image_size=self.image_size, train_sizes=self.train_sizes,
                                horizontal_flip=self.horizontal_flip, random_crop=self.random_crop,
                                color_jitter=self.color_jitter, seed=self.seed)

    def new_stream(self, split: str) -> DetectionStream:
        rank, world = self._rank_and_world()
        training = split == "train"
        return DetectionStream(self.root, self.manifest.split(split).shards, self.fields, self.batcher(split),
                               batch_size=self.batch_size if training else self.eval_batch_size, training=training,
                               rank=rank, world_size=world, num_workers=self.num_workers, seed=self.seed,
                               shuffle_buffer=self.shuffle_buffer)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, targets = batch
        return images.float().div_(255), targets
