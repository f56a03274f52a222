"""Random shards shaped like a recipe's dataset, for benchmarking where the data is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stride.datamodules.image_shards import write_image_classification


def write_synthetic_images(out_dir: str | Path, num_train: int, *, shape: tuple[int, ...] = (1, 28, 28),
                           num_classes: int = 10, encoding: str = "png", seed: int = 0) -> Path:
    """uint8 noise images with random labels: `num_train` for training, a tenth as many for val and test.

    Noise compresses worse than real images, so PNG decoding here is a pessimistic bound.
    """
    rng = np.random.default_rng(seed)
    held_out = max(1, num_train // 10)

    def split(count: int) -> tuple[np.ndarray, np.ndarray]:
        return (rng.integers(0, 256, size=(count, *shape), dtype=np.uint8),
                rng.integers(0, num_classes, size=count, dtype=np.int64))

    write_image_classification(
        out_dir, dataset="synthetic", splits={"train": split(num_train), "val": split(held_out),
                                              "test": split(held_out)},
        class_names=[str(c) for c in range(num_classes)], source={"kind": "synthetic", "seed": seed},
        parameters={"num_train": num_train, "shape": list(shape), "encoding": encoding}, encoding=encoding)
    return Path(out_dir)
