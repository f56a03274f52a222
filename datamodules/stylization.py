"""Datasets of the stylization task (docs/datasets.md, "Stylization datasets"): content images and style images.

A fast style-transfer network is trained on content images alone, its losses measured against one or more
fixed style images (docs/models.md, D: the pastiche network, one gamma/beta per style). So a sample is one
content image, RGB S x S, and its key, the sample's index in its split written as digits; no label. The style
images are files of the dataset beside the shards, `style-NN-<name>.png`, each listed with its sha256 in the
manifest's `parameters.styles` and read back only if it still has that sha256; `class_names` are the styles'
names in order. (The files sit at the dataset's top level, not in a `styles/` folder: a dataset's extra files
are what `stride data copy` and the upload to a bucket carry, and those are its top-level files.)

Batches, once on the device, are `(images, keys)`: float32 N x 3 x S x S in [0, 1], not normalised (the
pastiche network takes and returns pixels), and int64 sample indices.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from stride.datamodules.augment import random_horizontal_flip
from stride.datamodules.image_classification import image_field
from stride.datamodules.image_shards import ENCODINGS, encode_image
from stride.datamodules.location import LocalFolder, S3Prefix
from stride.datamodules.manifest import Manifest, read_manifest
from stride.datamodules.pixel_stats import PixelSums
from stride.datamodules.sharded import ShardedDataModule
from stride.datamodules.sources.coco_captions import Skips
from stride.datamodules.sources.style_images import StyleImage
from stride.datamodules.streaming import KEY_FIELD, stack_batch
from stride.datamodules.writer import ShardWriter
from stride.errors import StrideError
from stride.names import plain_name, safe_filename

log = logging.getLogger(__name__)

TASK = "stylization"
SPLITS = ("train", "val", "test")
PREPARE_WITH = "stride data prepare photos | image-folder | coco-images"
MAX_STYLE_BYTES = 256 << 20  # a 4096 x 4096 RGB PNG is at most 48 MiB


def sample_key(index: int) -> str:
    return f"{index:08d}"


def style_file(index: int, name: str) -> str:
    return f"style-{index:02d}-{safe_filename(name, 'style')}.png"


# -- writing -------------------------------------------------------------------------------------------------
def write_stylization_dataset(out_dir: str | Path, *, dataset: str, images: Iterable[tuple[str, np.ndarray]],
                              styles: list[StyleImage], source: dict[str, Any], parameters: dict[str, Any],
                              skips: Skips | None = None, total: int | None = None, encoding: str = "png",
                              samples_per_shard: int = 5000, overwrite: bool = False) -> Manifest:
    """Write the content images (uint8 3 x S x S, each split's in one run) and the style files as a dataset.

    `skips` counts the images a source left out while `images` was iterated; they go into the manifest.
    """
    if encoding not in ENCODINGS:
        raise StrideError(f"--encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    if not styles:
        raise StrideError(f"{dataset}: a stylization dataset needs at least one style image (--styles)")
    skips = skips or Skips()
    counts = dict.fromkeys(SPLITS, 0)
    shape: list[int] | None = None
    sums = PixelSums.empty()
    with ShardWriter(out_dir, samples_per_shard=samples_per_shard, overwrite=overwrite) as writer:
        for split, image in tqdm(images, total=total, desc=f"writing {dataset} shards", unit="img"):
            if shape is None:
                shape = list(image.shape)
            if list(image.shape) != shape or shape[0] != 3 or image.dtype != np.uint8:
                raise StrideError(f"{dataset}: image {counts[split]} of {split} is {image.dtype} {list(image.shape)}; "
                                  f"content images are uint8 RGB, 3 x S x S, all of one size (the first: {shape})")
            if split == "train":
                sums.add(image, channel_axis=0)
            writer.add(split, sample_key(counts[split]), {encoding: encode_image(image, encoding)})
            counts[split] += 1
        skips.log(dataset)
        if empty := [split for split in SPLITS if not counts[split]]:
            raise StrideError(f"{dataset}: no usable content image for the {' and '.join(empty)} split(s) (left out: "
                              f"{dict(skips.counts) or 'none'})")
        assert shape is not None  # some image was written
        recorded = []
        for index, style in enumerate(styles):
            name, png = style_file(index, style.name), style.png()
            writer.add_file(name, png)
            recorded.append({"name": style.name, "file": name, "sha256": hashlib.sha256(png).hexdigest(),
                             "size_hw": list(style.pixels.shape[:2]), "origin": style.origin})
        return writer.commit(
            dataset=dataset, task=TASK, source=source,
            parameters={**parameters, "encoding": encoding, "samples_per_shard": samples_per_shard,
                        "styles": recorded},
            sample_schema={encoding: {"role": "image", "shape": shape, "dtype": "uint8",
                                      "layout": "CHW" if encoding == "npy" else "HW(C) image",
                                      "meaning": "content image, RGB"}},
            class_names=[style.name for style in styles], stats=sums.stats(), skipped_samples=dict(skips.counts))


# -- reading -------------------------------------------------------------------------------------------------
def images_and_keys(samples: list[tuple[Any, ...]]) -> tuple[torch.Tensor, list[str]]:
    """(uint8 images N x 3 x S x S, sample keys): the very batch a decoded cache yields (`cache.CachedStream`)."""
    return stack_batch([sample[:1] for sample in samples])[0], [sample[1] for sample in samples]


def decode_style_png(raw: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as err:  # Pillow raises UnidentifiedImageError, OSError, ValueError, ...
        raise StrideError(f"{where}: not a readable PNG ({type(err).__name__}: {err})") from None


class StylizationData(ShardedDataModule):
    """Content images float32 in [0, 1] with their sample indices, and the dataset's style images."""

    task = TASK
    # the base refuses data.cache for other collates; images_and_keys makes what a cache yields (set per instance)
    collate: Callable[[list[tuple[Any, ...]]], Any] = staticmethod(stack_batch)

    def __init__(self, path: str | Path | LocalFolder | S3Prefix, *, batch_size: int = 4,
                 eval_batch_size: int | None = None, num_workers: int = 0, shuffle_buffer: int = 1000,
                 pin_memory: bool = False, seed: int = 0, normalize: str | bool = False, cache: str = "none",
                 cache_budget_bytes: int | None = None, cache_device: torch.device | None = None,
                 horizontal_flip: bool = False, verify_checksums: bool = True):
        task = read_manifest(path).task  # read first: the base's refusal would not say how to make a dataset
        if task != TASK:
            raise StrideError(f"{path}: dataset task is {task!r}, not {TASK!r}; make a stylization dataset with "
                              f"`{PREPARE_WITH}`")
        # `normalize` is taken with the other data options and has no effect: the network sees [0, 1] pixels
        super().__init__(path, batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                         shuffle_buffer=shuffle_buffer, pin_memory=pin_memory, seed=seed,
                         verify_checksums=verify_checksums, normalize="none", cache=cache,
                         cache_budget_bytes=cache_budget_bytes, cache_device=cache_device)
        self.collate = images_and_keys
        self.image_ext = image_field(self.manifest.sample_schema, self.root.member("manifest.json"))
        self.fields = (self.image_ext, KEY_FIELD)
        self.horizontal_flip = horizontal_flip
        self._styles = self._style_entries()
        self._style_images: list[np.ndarray] | None = None

    def _style_entries(self) -> list[dict[str, str]]:
        where = self.root.member("manifest.json")
        entries = self.manifest.parameters.get("styles")
        if not isinstance(entries, list) or not entries or not all(
                isinstance(entry, dict) and all(isinstance(entry.get(key), str) for key in ("name", "file", "sha256"))
                for entry in entries):
            raise StrideError(f"{where}: parameters.styles must list each style's name, file and sha256 (prepare the "
                              f"dataset again with `{PREPARE_WITH}`)")
        if [entry["name"] for entry in entries] != self.manifest.class_names:
            raise StrideError(f"{where}: parameters.styles names {[entry['name'] for entry in entries]}, but "
                              f"class_names are {self.manifest.class_names}; the manifest was edited")
        for entry in entries:
            plain_name(entry["file"], f"{where}: parameters.styles file")
        return entries

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest.sample_schema[self.image_ext]["shape"])

    @property
    def normalization(self) -> None:
        return None  # the pastiche network takes and returns [0, 1] pixels (docs/models.md, D)

    def style_images(self) -> list[np.ndarray]:
        """The styles as uint8 H x W x 3, in `class_names` order; a file whose sha256 is not the manifest's is an
        error naming it."""
        if self._style_images is None:
            images = []
            for entry in self._styles:
                raw = self.root.read_bytes(entry["file"], MAX_STYLE_BYTES)
                where = self.root.member(entry["file"])
                if (digest := hashlib.sha256(raw).hexdigest()) != entry["sha256"]:
                    raise StrideError(f"{where}: sha256 {digest} differs from the manifest's {entry['sha256']}; the "
                                      f"style image {entry['name']!r} was edited or belongs to another dataset")
                images.append(decode_style_png(raw, where))
            self._style_images = images
        return list(self._style_images)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, keys = batch
        images = images.float().div_(255)
        try:
            indices = torch.tensor([int(key) for key in keys], dtype=torch.int64, device=images.device)
        except ValueError:
            raise StrideError(f"{self.root}: sample keys {list(keys)[:3]} are not sample indices; stylization "
                              f"datasets are written by `{PREPARE_WITH}`") from None
        trainer = getattr(self, "trainer", None)
        if self.horizontal_flip and trainer is not None and trainer.training:
            images = random_horizontal_flip(images)
        return images, indices
