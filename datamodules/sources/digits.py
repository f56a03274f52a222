"""The built-in offline dataset: scikit-learn's 1,797 real 8x8 handwritten digits, resized to 28x28.

`size_px=8` keeps the native resolution: 64-step pixel sequences that a CPU trains in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from stride.datamodules.image_shards import deterministic_split, write_image_classification
from stride.datamodules.manifest import Manifest
from stride.errors import StrideError

SIZE_PX = 28


def load_digits_px(size_px: int = SIZE_PX) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no network

    digits = load_digits()
    images = []
    for image in digits.images:  # values 0..16
        small = Image.fromarray(np.round(image * (255 / 16)).astype(np.uint8))
        images.append(np.asarray(small if size_px == 8 else small.resize((size_px, size_px),
                                                                           Image.Resampling.BILINEAR)))
    return np.stack(images)[:, None], digits.target.astype(np.int64)


def prepare_digits(out_dir: str | Path, *, val_size: int = 180, test_size: int = 360, seed: int = 0,
                   encoding: str = "png", samples_per_shard: int = 5000, overwrite: bool = False,
                   size_px: int = SIZE_PX) -> Manifest:
    if size_px < 8:
        raise StrideError(f"--image-size {size_px}: the digits are 8x8 pixels; give 8 (native) or more")
    images, labels = load_digits_px(size_px)
    if val_size < 1 or test_size < 1 or val_size + test_size >= len(labels):
        raise StrideError(f"--val-size {val_size} and --test-size {test_size} must be positive and leave "
                          f"training images out of {len(labels)}")
    rest, test = deterministic_split(len(labels), test_size, seed)
    train_pos, val_pos = deterministic_split(len(rest), val_size, seed + 1)
    train, val = rest[train_pos], rest[val_pos]
    return write_image_classification(
        out_dir, dataset="digits",
        splits={"train": (images[train], labels[train]), "val": (images[val], labels[val]),
                "test": (images[test], labels[test])},
        class_names=[str(d) for d in range(10)],
        source={"kind": "builtin", "package": "scikit-learn", "loader": "sklearn.datasets.load_digits",
                "original_size_px": 8, "resized_to_px": size_px},
        parameters={"val_size": val_size, "test_size": test_size, "seed": seed, "encoding": encoding,
                    "size_px": size_px, "samples_per_shard": samples_per_shard},
        encoding=encoding, samples_per_shard=samples_per_shard, overwrite=overwrite)
