"""Streaming shards into batches, split correctly across DDP ranks and loader workers.

Every (rank, worker) pair is a *slot*. With at least as many shards as slots, each slot
reads its own shards; otherwise every slot reads all shards and keeps every n-th sample.
Either way the slots see disjoint samples.

- Training: shard order is reshuffled each epoch from (seed, epoch), identically on all
  ranks; samples pass through a seeded shuffle buffer; each slot cycles its shards until
  it has produced its quota of full batches, so every rank yields the same number of
  batches (what DDP needs to avoid hanging).
- Evaluation: no shuffle, no repetition, partial last batch kept: every sample is seen
  exactly once across all ranks.

Members are decoded by a fixed table (PNG/JPEG via Pillow, `.npy` without pickle, text
labels); anything else is an error, never an unpickle.
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from stride.datamodules.location import DatasetLocation, LocalFolder, S3Prefix, dataset_location
from stride.datamodules.manifest import ShardEntry
from stride.datamodules.tar_samples import tar_samples
from stride.errors import StrideError

GZIP_MAGIC = b"\x1f\x8b"
KEY_FIELD = "__key__"  # a pseudo-field: the sample's key, for tracing samples


def _image_decoder(image_format: str) -> Callable[[bytes], np.ndarray]:
    """A decoder that lets Pillow try only `image_format`: a .png member holding a TIFF or an EPS is an error."""
    def decode(payload: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(payload), formats=[image_format]) as image:
            array = np.asarray(image)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # CHW

    return decode


def _decode_npy(payload: bytes) -> np.ndarray:
    return np.load(io.BytesIO(payload), allow_pickle=False)


SAFE_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "png": _image_decoder("PNG"),
    "jpg": _image_decoder("JPEG"),
    "jpeg": _image_decoder("JPEG"),
    "npy": _decode_npy,
    "cls": lambda payload: int(payload.decode("ascii")),
    "txt": lambda payload: payload.decode("utf-8"),
    "json": lambda payload: json.loads(payload.decode("utf-8")),
}


def decode_member(ext: str, payload: bytes) -> Any:
    try:
        decoder = SAFE_DECODERS[ext]
    except KeyError:
        raise ValueError(f"member type .{ext} has no safe decoder (allowed: {', '.join(SAFE_DECODERS)})") from None
    return decoder(payload)


def iter_shard(path: Path, fields: tuple[str, ...]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, raw members) of one local shard file, raising naming the shard and key on any defect."""
    with open(path, "rb") as handle:
        yield from _shard_samples(handle, str(path), fields)


def iter_stored_shard(location: DatasetLocation, shard: ShardEntry,
                      fields: tuple[str, ...]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """`iter_shard` of a shard where its dataset lives; a bucket's shard is checked against the manifest's
    size and sha256 once it has been read to the end."""
    reader = location.open_shard(shard.name, shard.num_bytes, shard.sha256)  # opening does no I/O yet
    try:
        yield from _shard_samples(reader.stream, location.member(shard.name), fields)
        reader.finish()
    finally:
        reader.close()


def _shard_samples(handle: io.BufferedReader, source: str,
                   fields: tuple[str, ...]) -> Iterator[tuple[str, dict[str, bytes]]]:
    last_key = "(start of shard)"
    try:
        if handle.peek(2)[:2] == GZIP_MAGIC:
            raise StrideError(f"shard {source} is gzip-compressed; stride's shards are plain tar files (write them "
                              "with `stride data prepare`)")
        for key, sample in tar_samples(handle, source):
            missing = [f for f in fields if f not in sample and f != KEY_FIELD]
            if missing:
                raise StrideError(f"shard {source}, sample {key!r}: missing member(s) {', '.join(missing)}")
            last_key = key
            yield key, {f: sample[f] for f in fields if f != KEY_FIELD}
    except StrideError:
        raise
    except Exception as err:  # tarfile errors on truncated or corrupted archives
        raise StrideError(f"shard {source} is corrupted or truncated after sample {last_key!r}: {err}") from None


@dataclass(frozen=True)
class SlotPlan:
    shards: list[ShardEntry]
    sample_stride: int  # keep every n-th sample of the shards' stream ...
    sample_offset: int  # ... starting at this one

    @property
    def num_samples(self) -> int:
        total = sum(s.num_samples for s in self.shards)
        return len(range(self.sample_offset, total, self.sample_stride))


def plan_slot(shards: list[ShardEntry], slot: int, num_slots: int) -> SlotPlan:
    if len(shards) >= num_slots:
        return SlotPlan(shards[slot::num_slots], 1, 0)
    return SlotPlan(list(shards), num_slots, slot)


def split_evenly(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


class ShardStream(IterableDataset):
    """Batches of decoded samples from one split; yields whatever `to_batch` makes of a list of samples."""

    def __init__(
        self,
        root: str | Path | LocalFolder | S3Prefix,
        shards: list[ShardEntry],
        fields: tuple[str, ...],
        to_batch: Callable[[list[tuple[Any, ...]]], Any],
        *,
        batch_size: int,
        training: bool,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        shuffle_buffer: int = 1000,
    ):
        self.root = dataset_location(root)
        self.shards = shards
        self.fields = fields
        self.to_batch = to_batch
        self.batch_size = batch_size
        self.training = training
        self.rank, self.world_size = rank, world_size
        self.loader_workers = max(1, num_workers)
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.epoch = 0  # advanced on each pass; loader workers must be persistent to keep it
        total = sum(s.num_samples for s in shards)
        self.batches_per_rank = total // (world_size * batch_size) if training else None
        if training and self.batches_per_rank == 0:
            raise StrideError(f"{self.root}: the training split has {total} samples, fewer than one batch of "
                              f"{batch_size} per rank x {world_size} rank(s); lower data.batch_size")

    def _slot_plan(self, worker: int, epoch: int) -> SlotPlan:
        shards = list(self.shards)
        if self.training:
            random.Random(f"{self.seed}-{epoch}").shuffle(shards)
        slots = self.world_size * self.loader_workers
        return plan_slot(shards, self.rank * self.loader_workers + worker, slots)

    def __len__(self) -> int:
        if self.training:
            assert self.batches_per_rank is not None  # counted whenever training
            return self.batches_per_rank
        return sum(math.ceil(self._slot_plan(w, 0).num_samples / self.batch_size) for w in range(self.loader_workers))

    def _samples(self, plan: SlotPlan, rng: random.Random | None) -> Iterator[tuple[Any, ...]]:
        index = 0
        shards = list(plan.shards)
        if rng is not None:
            rng.shuffle(shards)
        for shard in shards:
            path = self.root.member(shard.name)
            seen = 0
            for key, members in iter_stored_shard(self.root, shard, self.fields):
                seen += 1
                if index % plan.sample_stride == plan.sample_offset:
                    try:
                        yield tuple(key if f == KEY_FIELD else decode_member(f, members[f]) for f in self.fields)
                    except Exception as err:
                        raise StrideError(f"shard {path}, sample {key!r}: cannot decode: {err}") from None
                index += 1
            if seen != shard.num_samples:
                raise StrideError(f"shard {path} holds {seen} samples, the manifest says {shard.num_samples}")

    def _shuffled(self, samples: Iterator[tuple[Any, ...]], rng: random.Random) -> Iterator[tuple[Any, ...]]:
        buffer: list[tuple[Any, ...]] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            pick = rng.randrange(len(buffer))
            yield buffer[pick]
            buffer[pick] = sample
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        epoch = self.epoch
        self.epoch += 1
        plan = self._slot_plan(worker, epoch)
        if not self.training:
            yield from self._batches(self._samples(plan, None), limit=None)
            return
        assert self.batches_per_rank is not None  # counted whenever training
        quota = split_evenly(self.batches_per_rank, self.loader_workers, worker)
        if quota and plan.num_samples == 0:
            raise StrideError(f"{self.root}: loader slot {worker} of rank {self.rank} has no samples; "
                              "use fewer data.num_workers")
        rng = random.Random(f"{self.seed}-{epoch}-{self.rank}-{worker}")

        def cycle() -> Iterator[tuple[Any, ...]]:
            while True:
                yield from self._shuffled(self._samples(plan, rng), rng)

        yield from self._batches(cycle(), limit=quota)

    def _batches(self, samples: Iterator[tuple[Any, ...]], limit: int | None) -> Iterator[Any]:
        if limit == 0:
            return
        batch: list[tuple[Any, ...]] = []
        produced = 0
        for sample in samples:
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self.to_batch(batch)
                batch, produced = [], produced + 1
                if limit is not None and produced >= limit:
                    return
        if batch and limit is None:
            yield self.to_batch(batch)


def stack_batch(samples: list[tuple[Any, ...]]) -> tuple[torch.Tensor, ...]:
    """Stack equally shaped numpy arrays / ints field by field into tensors."""
    return tuple(torch.from_numpy(np.stack([np.asarray(s[i]) for s in samples])) for i in range(len(samples[0])))
