"""Write in-memory image-classification splits as a stride dataset (shards + manifest)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from stride.datamodules.manifest import Manifest
from stride.datamodules.pixel_stats import PixelSums
from stride.datamodules.writer import ShardWriter

ENCODINGS = ("png", "npy")


def encode_image(image: np.ndarray, encoding: str) -> bytes:
    """uint8 C x H x W -> bytes. PNG is small; npy is fastest to decode."""
    buffer = io.BytesIO()
    if encoding == "npy":
        np.save(buffer, np.ascontiguousarray(image), allow_pickle=False)
    else:
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def channel_stats(images: np.ndarray, chunk: int = 1024) -> dict[str, list[float]]:
    """Per-channel mean and std of uint8 N x C x H x W images, on the [0, 1] scale."""
    sums = PixelSums.empty(images.shape[1])
    for start in range(0, len(images), chunk):
        sums.add(images[start:start + chunk], channel_axis=1)
    return sums.stats()


def write_image_classification(
    out_dir: str | Path,
    *,
    dataset: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: list[str],
    source: dict[str, Any],
    parameters: dict[str, Any],
    encoding: str = "png",
    samples_per_shard: int = 5000,
    overwrite: bool = False,
) -> Manifest:
    """`splits` maps split name to (uint8 images N x C x H x W, integer labels N)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    shape = list(splits["train"][0].shape[1:])
    total = sum(len(labels) for _, labels in splits.values())
    with ShardWriter(out_dir, samples_per_shard=samples_per_shard, overwrite=overwrite) as writer:
        with tqdm(total=total, desc=f"writing {dataset} shards", unit="img") as progress:
            for split, (images, labels) in splits.items():
                for index, (image, label) in enumerate(zip(images, labels)):
                    writer.add(split, f"{split}{index:08d}",
                               {encoding: encode_image(image, encoding), "cls": str(int(label)).encode()})
                    progress.update()
        return writer.commit(
            dataset=dataset, task="classification", source=source, parameters=parameters,
            sample_schema={encoding: {"role": "image", "shape": shape, "dtype": "uint8",
                                      "layout": "CHW" if encoding == "npy" else "HW(C) image"},
                           "cls": {"role": "label", "dtype": "int", "num_classes": len(class_names)}},
            class_names=class_names, stats=channel_stats(splits["train"][0]))


def deterministic_split(count: int, held_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept indices, held-out indices), both sorted, from a seeded permutation."""
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[held_out:]), np.sort(order[:held_out])
