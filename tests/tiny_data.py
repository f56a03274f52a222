"""A few-sample image dataset written by stride's own writer; light to import (no torch, no MLflow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stride.datamodules.image_shards import write_image_classification


def tiny_dataset(out: Path, class_names: list[str], seed: int = 0, overwrite: bool = False) -> Path:
    rng = np.random.default_rng(seed)

    def split(count: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, 255, (count, 1, 4, 4), dtype=np.uint8), np.arange(count) % len(class_names)

    write_image_classification(out, dataset="tiny", splits={"train": split(6), "val": split(2), "test": split(3)},
                               class_names=class_names, source={"kind": "test"}, parameters={"seed": seed},
                               samples_per_shard=10, overwrite=overwrite)
    return out
