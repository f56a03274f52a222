"""Lightning datamodule for sequence classification over shards from `stride data prepare sequences`.

Image datasets seen as sequences (sequential/permuted MNIST) need no datamodule of their
own: they stream as images and the network's `SequenceView` flattens them.
"""

from __future__ import annotations

from typing import Any

from stride.datamodules.sharded import ShardedDataModule, images_and_labels


class SequenceClassificationData(ShardedDataModule):
    """Batches of (float32 sequences N x C x T, labels int64)."""

    task = "sequence_classification"
    fields = ("npy", "cls")
    collate = staticmethod(images_and_labels)

    def __init__(self, path: Any, **kwargs: Any):
        super().__init__(path, **kwargs)
        self.sequence_shape = tuple(self.manifest.sample_schema["npy"]["shape"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.sequence_shape
