"""The base of every stride datamodule: a manifest, DDP-aware shard streams (or a decoded cache), safe decoding."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from stride.datamodules.cache import CACHE_MODES, CachedStream, check_budget, default_budget_bytes, open_decoded_split
from stride.datamodules.location import LocalFolder, S3Prefix, dataset_location
from stride.datamodules.manifest import load_manifest, verify_shards
from stride.datamodules.streaming import ShardStream, stack_batch
from stride.errors import StrideError


def images_and_labels(samples: list[tuple[Any, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = stack_batch(samples)
    return images, labels.long()


class ShardedDataModule(pl.LightningDataModule):
    """What every stride datamodule shares: a manifest, DDP-aware shard streams, safe decoding.

    Subclasses say which members a sample has (`fields`), how a list of decoded samples
    becomes a batch (`to_batch`) and what to do to a batch on the device.
    """

    task = ""

    def __init__(self, path: str | Path | LocalFolder | S3Prefix, *, batch_size: int,
                 eval_batch_size: int | None = None, num_workers: int = 0, shuffle_buffer: int = 1000,
                 pin_memory: bool = True, seed: int = 0,
                 verify_checksums: bool = True, normalize: str = "dataset", cache: str = "none",
                 cache_budget_bytes: int | None = None, cache_device: torch.device | None = None):
        super().__init__()
        if cache not in CACHE_MODES:
            raise StrideError(f"data.cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
        if cache != "none" and (not self.cacheable or self.collate not in (stack_batch, images_and_labels)):
            # a cached batch is the stacked members, which is what these two collates make
            raise StrideError(f"data.cache={cache}: {self.task} samples vary in size and stream from the shards; "
                              "set data.cache: none")
        self.cache = cache
        self.cache_budget_bytes = cache_budget_bytes
        self._cache_device = cache_device  # None: the trainer's device (`stride bench` names the one it measures)
        self.normalize = normalize
        self.root = dataset_location(path)  # a folder or an s3:// prefix
        self.manifest, self._manifest_sha256 = load_manifest(self.root)  # the sha256 of the bytes just read
        if self.manifest.task != self.task:  # subclasses accept exactly one kind of dataset
            raise StrideError(f"{self.root}: dataset task is {self.manifest.task!r}, expected {self.task!r}")
        for split in ("train", "val", "test"):
            self.manifest.split(split)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.pin_memory = pin_memory
        self.seed = seed
        self.verify_checksums = verify_checksums
        self._verified = False
        self._budget_checked_for: torch.device | None = None
        self._streams: dict[str, ShardStream | CachedStream] = {}
        self._start_epoch = 0  # the training epoch served first (a resumed run's, `start_training_at`)

    fields: tuple[str, ...] = ()
    # samples of equal shape stack into arrays, so `data.cache` can decode a split once; datasets of
    # variable-size samples (boxes, captions) say False and always stream
    cacheable = True
    # module-level function, not a bound method: loader workers may be spawned, and
    # pickling a bound method would drag the datamodule (and its trainer) along
    collate: Callable[[list[tuple[Any, ...]]], Any] = staticmethod(stack_batch)

    @property
    def dataset_sha256(self) -> str:
        return self._manifest_sha256

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample as the network takes it, without the batch dimension: each subclass says."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.manifest.class_names)

    @property
    def class_names(self) -> list[str]:
        """What the network's outputs mean: the manifest's classes (a captioner's are its vocabulary's words)."""
        return list(self.manifest.class_names)

    @property
    def normalization(self) -> tuple[list[float], list[float]] | None:
        """Per-channel (mean, std) of the training split to fold into the model, or None."""
        if self.normalize == "none":
            return None
        stats = self.manifest.stats
        if "mean" not in stats or "std" not in stats:
            raise StrideError(f"{self.root.member('manifest.json')} has no stats.mean/std; set data.normalize: none")
        return stats["mean"], stats["std"]

    def setup(self, stage: str | None = None) -> None:
        if not self._verified:
            verify_shards(self.root, self.manifest, checksums=self.verify_checksums)
            self._verified = True
        if self.cache != "none" and self._budget_checked_for != self.cache_device:  # again once on the trainer's device
            budget = self.cache_budget_bytes or default_budget_bytes(self.cache, self.cache_device)
            check_budget(self.manifest, self.root, self.fields, self.cache, budget, self._rank_and_world()[1])
            self._budget_checked_for = self.cache_device
        self._streams.clear()

    def prepare_data(self) -> None:
        """Lightning runs this on one process per node, the others waiting: a cached dataset is decoded
        there once, instead of by every DDP rank at the same time."""
        if self.cache != "none":
            self.build_cache()

    def build_cache(self) -> None:
        """Decode every split now (a search's driver does, so that its trials only read the cache)."""
        for split in self.manifest.splits:
            open_decoded_split(self.root, self.manifest, self.dataset_sha256, split,
                               checksums=self.verify_checksums)

    @property
    def cache_device(self) -> torch.device:
        """Where `data.cache: device` keeps the splits: the device this rank trains on."""
        trainer = getattr(self, "trainer", None)
        if self.cache != "device":
            return torch.device("cpu")
        if self._cache_device is not None:
            return self._cache_device
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def stream(self, split: str) -> ShardStream | CachedStream:
        """The split's batches for this rank, made once per setup; training starts at `start_training_at`'s epoch."""
        if split not in self._streams:
            self._streams[split] = self.new_stream(split)
            if split == "train":
                self._streams[split].epoch = self._start_epoch
        return self._streams[split]

    def new_stream(self, split: str) -> ShardStream | CachedStream:
        rank, world = self._rank_and_world()
        training = split == "train"
        batch_size = self.batch_size if training else self.eval_batch_size
        if self.cache != "none":
            decoded = open_decoded_split(self.root, self.manifest, self.dataset_sha256, split,
                                         checksums=self.verify_checksums)
            return CachedStream(decoded, self.manifest.split(split).shards, self.fields, batch_size=batch_size,
                                training=training, rank=rank, world_size=world, seed=self.seed,
                                device=self.cache_device)
        return ShardStream(self.root, self.manifest.split(split).shards, self.fields, self.collate,
                           batch_size=batch_size, training=training, rank=rank, world_size=world,
                           num_workers=self.num_workers, seed=self.seed, shuffle_buffer=self.shuffle_buffer)

    def loader(self, split: str) -> DataLoader:
        # a cached split is already decoded: batches are cut in this process (no worker would be faster)
        workers = self.num_workers if self.cache == "none" else 0
        pin = self.pin_memory and torch.cuda.is_available() and self.cache != "device"
        return DataLoader(self.stream(split), batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=pin, prefetch_factor=4 if workers > 0 else None)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def start_training_at(self, epoch: int) -> None:
        """Serve training epoch `epoch` first: a run resumed from a checkpoint at epoch k goes on with epoch
        k's order (streams and caches draw it from seed and epoch), not with epoch 0's again. Set before
        the training loader exists: its loader workers take their copy of the stream when they start,
        and Lightning starts them before it restores the epoch counter."""
        self._start_epoch = epoch
        self._streams.pop("train", None)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
