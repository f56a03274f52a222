"""Decoded split caches (`data.cache: memory | device`): shards decoded once, served without per-sample Python.

On first use a split's shards are decoded, in manifest order, into one contiguous array per
member (uint8 images N x C x H x W, float sequences, int64 labels) plus the sample keys, and
written as plain `.npy` files (never pickles) under `<dataset>/.stride-cache/<split>-<manifest
sha256>/`. The folder appears atomically (written beside, then renamed), so concurrent trials and
killed processes never leave a half-written cache that is read. `meta.json` records the
manifest digest, the sample count, and every array's size and sha256: a stale cache (the dataset
changed) is never found, and a truncated or altered one fails its check and is rebuilt.

Batches are cut from those arrays with one index operation per member. Ranks and epochs follow
the streaming path's plan (`streaming.plan_slot`): each rank holds and shuffles only its own
disjoint part, every rank yields the same number of training batches, and evaluation sees every
sample exactly once across ranks. In `device` mode the rank's part lives on the accelerator and
the per-epoch permutation is drawn there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from stride.datamodules.location import DatasetLocation, dataset_location
from stride.datamodules.manifest import Manifest, ShardEntry, sha256_of, verify_shards
from stride.datamodules.memory_budget import host_budget_bytes
from stride.datamodules.streaming import KEY_FIELD, decode_member, iter_stored_shard, plan_slot
from stride.errors import StrideError

log = logging.getLogger(__name__)

CACHE_MODES = ("none", "memory", "device")
CACHE_FOLDER = ".stride-cache"
CACHE_FORMAT = 1
KEYS_FILE = "__key__.npy"
META_FILE = "meta.json"
_CHECKED: set[tuple] = set()  # cache folders whose digests this process has verified (path, sizes, mtimes)


@dataclass(frozen=True)
class DecodedSplit:
    """One split as arrays: `arrays[field]` has one row per sample, in manifest order."""

    arrays: dict[str, np.ndarray]
    keys: np.ndarray

def cache_folder(root: DatasetLocation, split: str, manifest_sha256: str) -> Path:
    """Beside the shards; for a dataset folder this user cannot write (shared storage) or a bucket, under
    $STRIDE_CACHE_DIR or ~/.cache/stride instead, once per node (the manifest digest in the name keeps
    datasets apart)."""
    name = f"{split}-{manifest_sha256[:32]}"
    if root.local is not None and os.access(root.local, os.W_OK):
        return root.local / CACHE_FOLDER / name
    return Path(os.environ.get("STRIDE_CACHE_DIR", Path.home() / ".cache" / "stride")) / name


def open_decoded_split(root: str | Path | DatasetLocation, manifest: Manifest, manifest_sha256: str, split: str, *,
                       checksums: bool = True) -> DecodedSplit:
    """The split's cache of every member in the sample schema, memory-mapped: reused when intact,
    (re)built from the shards otherwise. Sizes are checked every time; the sha256s with `checksums`
    (once per process), as for shards: a search's trials and the other DDP ranks check sizes only."""
    fields = tuple(manifest.sample_schema)
    root = dataset_location(root)
    folder = cache_folder(root, split, manifest_sha256)
    expected = (folder, manifest_sha256, manifest.split(split).num_samples, fields)
    problem = _check(*expected, checksums=checksums)
    if problem:
        if folder.exists():
            log.warning("rebuilding the decoded cache %s: %s", folder, problem)
        _build(root, manifest, manifest_sha256, split, fields, folder,
               intact=lambda: _check(*expected, checksums=True) is None)
        problem = _check(*expected, checksums=False)  # hashed while it was written
        if problem:
            raise StrideError(f"decoded cache {folder} failed its own check right after writing: {problem}")
    arrays = {f: np.load(folder / f"{f}.npy", mmap_mode="r", allow_pickle=False) for f in fields}
    return DecodedSplit(arrays, np.load(folder / KEYS_FILE, allow_pickle=False))


def _check(folder: Path, manifest_sha256: str, num_samples: int, fields: tuple[str, ...], *,
           checksums: bool) -> str | None:
    """None if `folder` is an intact cache of this manifest's split, else what is wrong."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return "no cache yet"
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
        if meta.get("format") != CACHE_FORMAT or meta.get("manifest_sha256") != manifest_sha256:
            return "written for another dataset version"
        if meta.get("num_samples") != num_samples or set(files) != {*(f"{f}.npy" for f in fields), KEYS_FILE}:
            return "it does not hold this split's members"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable {META_FILE} ({err})"
    seen = []
    for name, entry in files.items():
        stat = (folder / name).stat() if (folder / name).is_file() else None
        if stat is None or stat.st_size != entry["num_bytes"]:
            return f"{name} is missing or has the wrong size (truncated?)"
        seen.append((name, stat.st_size, stat.st_mtime_ns))
    key = (str(folder.resolve()), tuple(sorted(seen)))
    if checksums and key not in _CHECKED:
        for name, entry in files.items():
            if sha256_of(folder / name) != entry["sha256"]:
                return f"{name} does not match its recorded sha256 (corrupted)"
        _CHECKED.add(key)
    return None


def _build(root: DatasetLocation, manifest: Manifest, manifest_sha256: str, split: str, fields: tuple[str, ...],
           folder: Path, intact: Callable[[], bool]) -> None:
    shards = manifest.split(split).shards
    total = manifest.split(split).num_samples
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        # every shard's sha256 against the manifest: a folder's once per process (not again after setup
        # hashed them), a bucket's while its shards are decoded
        verify_shards(root, manifest, [split], checksums=True)
        keys: list[str] = []
        outputs: dict[str, np.memmap] = {}
        for shard in shards:
            _decode_shard(root, shard, fields, tmp, outputs, keys, total)
        for array in outputs.values():
            array.flush()
        del outputs
        np.save(tmp / KEYS_FILE, np.asarray(keys, dtype=str), allow_pickle=False)
        names = [*(f"{f}.npy" for f in fields), KEYS_FILE]
        files = {name: {"num_bytes": (tmp / name).stat().st_size, "sha256": sha256_of(tmp / name)} for name in names}
        (tmp / META_FILE).write_text(json.dumps({"format": CACHE_FORMAT, "manifest_sha256": manifest_sha256,
                                                 "split": split, "num_samples": total, "files": files}, indent=1))
        _swap_in(tmp, folder, intact)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _decode_shard(root: DatasetLocation, shard: ShardEntry, fields: tuple[str, ...], tmp: Path,
                  outputs: dict[str, np.memmap], keys: list[str], total: int) -> None:
    """Decode one (already verified) shard into the preallocated arrays, checking its sample count."""
    path = root.member(shard.name)
    start = len(keys)
    for key, members in iter_stored_shard(root, shard, fields):
        row = len(keys)
        if row - start == shard.num_samples:
            raise StrideError(f"shard {path} holds more samples than the {shard.num_samples} its manifest says")
        for field in fields:
            try:
                value = np.asarray(decode_member(field, members[field]))
            except Exception as err:
                raise StrideError(f"shard {path}, sample {key!r}: cannot decode .{field}: {err}") from None
            if field not in outputs:
                labels = value.ndim == 0 and value.dtype.kind in "iub"  # as int64, what the loss takes
                outputs[field] = np.lib.format.open_memmap(tmp / f"{field}.npy", mode="w+", shape=(total, *value.shape),
                                                           dtype=np.int64 if labels else value.dtype)
            if value.shape != outputs[field].shape[1:]:
                raise StrideError(f"shard {path}, sample {key!r}: .{field} has shape {value.shape}, earlier samples "
                                  f"{outputs[field].shape[1:]}; a decoded cache needs equal shapes (data.cache: none)")
            outputs[field][row] = value
        keys.append(key)
    if len(keys) - start != shard.num_samples:
        raise StrideError(f"shard {path} holds {len(keys) - start} samples, the manifest says {shard.num_samples}")


def _swap_in(tmp: Path, folder: Path, intact: Callable[[], bool]) -> None:
    """Move the finished cache into place. The first writer wins: an intact cache another process
    finished meanwhile stays (it may be in use); only a stale or damaged one is replaced."""
    if folder.exists() and intact():
        return
    if folder.exists():
        stale = folder.parent / f".{folder.name}.stale-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(folder, stale)
        except FileNotFoundError:
            pass
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, folder)
    except OSError:
        if not (folder / META_FILE).is_file():  # not another process's finished cache: a real failure
            raise


def split_nbytes(manifest: Manifest, split: str, fields: tuple[str, ...]) -> int | None:
    """Decoded size of a split from the manifest's sample schema, or None if a shape is not recorded."""
    per_sample = 0
    for field in fields:
        if field == KEY_FIELD:
            continue
        schema = manifest.sample_schema.get(field, {})
        if schema.get("role") == "label":
            per_sample += 8
            continue
        if "shape" not in schema:
            return None
        per_sample += math.prod(schema["shape"]) * np.dtype(schema.get("dtype", "uint8")).itemsize
    return per_sample * manifest.split(split).num_samples


def check_budget(manifest: Manifest, root: DatasetLocation, fields: tuple[str, ...], mode: str, budget_bytes: int,
                 world_size: int) -> None:
    """Refuse, before anything is decoded, splits whose rank share would not fit the cache budget."""
    sizes = {s: split_nbytes(manifest, s, fields) for s in manifest.splits}
    known = {s: n for s, n in sizes.items() if n is not None}
    needed = sum(math.ceil(n / world_size) for n in known.values())
    if needed > budget_bytes:
        listed = ", ".join(f"{s} {n / 2**20:,.1f} MiB" for s, n in known.items())
        where = "accelerator memory" if mode == "device" else "host memory"
        raise StrideError(f"{root}: data.cache={mode} needs {needed / 2**20:,.1f} MiB of {where} per rank "
                          f"({listed}; {world_size} rank(s)) but the budget is {budget_bytes / 2**20:,.1f} MiB; "
                          "raise data.cache_budget_mb, use more ranks, or set data.cache: none")


def default_budget_bytes(mode: str, device: torch.device | None) -> int:
    """Half of what is free now: host RAM for `memory`, the accelerator's memory for `device`."""
    if mode == "device" and device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return host_budget_bytes()


class CachedStream(IterableDataset):
    """Batches of one split cut from its decoded arrays; the `ShardStream` of `data.cache: memory | device`.

    The rank's part is fixed: the streaming evaluation plan over the shards in manifest order
    (`plan_slot` with one slot per rank), so ranks hold disjoint parts and evaluation sees each
    sample once. Training draws a fresh permutation of the part every epoch and yields exactly
    `batches_per_rank` full batches, cycling a part that is a little short, as streaming does.
    Yields tuples in `fields` order (the key pseudo-field as a list of strings).
    """

    def __init__(self, decoded: DecodedSplit, shards: list[ShardEntry], fields: tuple[str, ...], *, batch_size: int,
                 training: bool, rank: int = 0, world_size: int = 1, seed: int = 0,
                 device: torch.device | None = None):
        self.decoded, self.fields = decoded, fields
        self.batch_size, self.training = batch_size, training
        self.rank, self.seed = rank, seed
        self.device = device or torch.device("cpu")
        self.epoch = 0
        total = sum(s.num_samples for s in shards)
        self.batches_per_rank = total // (world_size * batch_size) if training else None
        if training and self.batches_per_rank == 0:
            raise StrideError(f"the training split has {total} samples, fewer than one batch of {batch_size} per "
                              f"rank x {world_size} rank(s); lower data.batch_size")
        starts = dict(zip((s.name for s in shards), np.cumsum([0, *(s.num_samples for s in shards)])))
        plan = plan_slot(list(shards), rank, world_size)
        rows = [np.arange(starts[s.name], starts[s.name] + s.num_samples) for s in plan.shards]
        self.rows = np.concatenate(rows)[plan.sample_offset::plan.sample_stride] if rows else np.arange(0)
        if training and len(self.rows) == 0:
            raise StrideError(f"rank {rank} of {world_size} has no training samples; use fewer ranks")
        self._tensors: dict[str, torch.Tensor] | None = None

    def _materialise(self) -> dict[str, torch.Tensor]:
        """This rank's rows as tensors on the stream's device, copied out of the memory map once."""
        if self._tensors is None:
            self._tensors = {f: torch.from_numpy(np.ascontiguousarray(self.decoded.arrays[f][self.rows]))
                             .to(self.device) for f in self.fields if f != KEY_FIELD}
        return self._tensors

    def __len__(self) -> int:
        if self.training:
            assert self.batches_per_rank is not None  # counted whenever training
            return self.batches_per_rank
        return math.ceil(len(self.rows) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        tensors = self._materialise()
        count = len(self.rows)
        if self.training:
            generator = torch.Generator(device=self.device)
            generator.manual_seed((self.seed * 1_000_003 + self.epoch * 7_919 + self.rank) % 2**63)
            assert self.batches_per_rank is not None  # counted whenever training
            needed = self.batches_per_rank * self.batch_size
            order = torch.cat([torch.randperm(count, generator=generator, device=self.device)
                               for _ in range(math.ceil(needed / count))])[:needed]
        else:
            order = torch.arange(count, device=self.device)
        self.epoch += 1
        # index_select, not tensor[index]: advanced indexing is ~10x slower on a CPU for the same gather
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            yield tuple(self.decoded.keys[self.rows[index.cpu().numpy()]].tolist() if f == KEY_FIELD
                        else tensors[f].index_select(0, index) for f in self.fields)
