"""Lightning datamodule for image classification over any stride manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stride.datamodules.augment import random_horizontal_flip, random_shift
from stride.datamodules.sharded import ShardedDataModule, images_and_labels
from stride.errors import StrideError

IMAGE_ENCODINGS = ("png", "jpg", "jpeg", "npy")


def image_field(schema: dict[str, dict[str, Any]], where: str) -> str:
    for ext in IMAGE_ENCODINGS:
        if schema.get(ext, {}).get("role") == "image":
            return ext
    raise StrideError(f"{where}: sample_schema has no image member (expected one of {', '.join(IMAGE_ENCODINGS)} "
                      "with role 'image')")


class ImageClassificationData(ShardedDataModule):
    """Batches of (images float32 in [0, 1] as N x C x H x W, labels int64); augmentation on the device."""

    task = "classification"
    collate = staticmethod(images_and_labels)

    def __init__(self, path: str | Path, *, random_shift_px: int = 0, horizontal_flip: bool = False, **kwargs: Any):
        super().__init__(path, **kwargs)
        self.image_ext = image_field(self.manifest.sample_schema, self.root.member("manifest.json"))
        self.fields = (self.image_ext, "cls")
        self.random_shift_px = random_shift_px
        self.horizontal_flip = horizontal_flip

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest.sample_schema[self.image_ext]["shape"])

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        images = images.float().div_(255)
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            images = random_shift(images, self.random_shift_px)
            if self.horizontal_flip:
                images = random_horizontal_flip(images)
        return images, labels
