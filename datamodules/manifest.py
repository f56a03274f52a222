"""`manifest.json`: what a sharded dataset holds and how to check it.

One manifest per dataset folder. It records the format version, the dataset's name
and source, the parameters that produced it, the sample schema (one entry per tar
member extension), class names, normalisation statistics of the training split, and
for every split its shards with their sample counts, byte sizes and sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError, field_validator

from stride.bounded_loading import load_json
from stride.datamodules.digest import MANIFEST_NAME, manifest_sha256, sha256_of
from stride.datamodules.location import DatasetLocation, dataset_location
from stride.datamodules.swap import finish_swap
from stride.errors import StrideError
from stride.names import plain_name

__all__ = ["MANIFEST_NAME", "Manifest", "ShardEntry", "SplitEntry", "load_manifest", "manifest_bytes",
           "manifest_sha256", "parse_manifest", "read_manifest", "sha256_of", "verify_shards"]

FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 64 << 20  # a shard's entry is about 150 bytes: room for 400,000 shards


class ShardEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    num_samples: NonNegativeInt
    num_bytes: NonNegativeInt
    sha256: str

    @field_validator("name")
    @classmethod
    def _inside_the_dataset_folder(cls, name: str) -> str:
        """A shard is read from the manifest's own folder: `../x.tar` or `/x.tar` would read data from elsewhere."""
        try:
            return plain_name(name, "shard name")
        except StrideError as err:
            raise ValueError(str(err)) from None


class SplitEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_samples: NonNegativeInt
    shards: list[ShardEntry]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    dataset: str
    task: str
    source: dict[str, Any]
    parameters: dict[str, Any]
    sample_schema: dict[str, dict[str, Any]]  # tar member extension -> description
    class_names: list[str] = []
    stats: dict[str, list[float]] = {}  # e.g. per-channel mean/std of the training split, pixels in [0, 1]
    skipped_samples: dict[str, int] = {}  # reason -> count; never silently dropped
    annotations: dict[str, Any] = {}  # what the annotations hold, e.g. faces kept and dropped per split
    splits: dict[str, SplitEntry]
    stride_version: str = ""

    def split(self, name: str) -> SplitEntry:
        try:
            return self.splits[name]
        except KeyError:
            raise StrideError(f"dataset {self.dataset!r} has no split {name!r} "
                              f"(has: {', '.join(self.splits)})") from None


def read_manifest(root: str | Path | DatasetLocation) -> Manifest:
    return load_manifest(root)[0]


def load_manifest(root: str | Path | DatasetLocation) -> tuple[Manifest, str]:
    """The dataset's manifest and the sha256 of the very bytes it was read from (the dataset's identity)."""
    location = dataset_location(root)
    raw = manifest_bytes(location)
    return parse_manifest(raw, location.member(MANIFEST_NAME)), hashlib.sha256(raw).hexdigest()


def manifest_bytes(location: DatasetLocation) -> bytes:
    if location.local is not None:
        finish_swap(location.local.absolute())  # a replacement killed half-way is rolled forward first
    sizes = location.sizes()
    if MANIFEST_NAME not in sizes:
        hint = "" if sizes or _exists(location) else (" (the folder does not exist" if location.local else
                                                      " (nothing is stored under that prefix") + \
            "; create it with `stride data prepare`)"
        raise StrideError(f"no dataset at {location}: {location.member(MANIFEST_NAME)} not found{hint}")
    return location.read_bytes(MANIFEST_NAME, MAX_MANIFEST_BYTES)


def parse_manifest(raw: bytes, where: str) -> Manifest:
    data = load_json(raw, where)
    if isinstance(data, dict) and data.get("format_version") != FORMAT_VERSION:
        raise StrideError(f"{where}: format_version {data.get('format_version')!r} is not supported "
                          f"(expected {FORMAT_VERSION})")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise StrideError(f"{where}: invalid manifest at {key}: {first['msg']}") from None
    for name, split in manifest.splits.items():
        counted = sum(shard.num_samples for shard in split.shards)
        if counted != split.num_samples:
            raise StrideError(f"{where}: split {name!r} says num_samples {split.num_samples}, but its shards hold "
                              f"{counted}; the manifest was edited or is damaged")
    return manifest


def _exists(location: DatasetLocation) -> bool:
    return location.local.exists() if location.local is not None else False


_VERIFIED: set[tuple] = set()  # datasets whose shards this process has hashed, with their sizes and mtimes


def verify_shards(root: str | Path | DatasetLocation, manifest: Manifest, splits: list[str] | None = None,
                  checksums: bool = True) -> None:
    """Raise naming the first shard that is missing, of the wrong size, or whose sha256 differs.

    Sizes are checked every time; the sha256 of a folder's shards once per process (again if any
    shard's size or modification time changed since). A bucket's shards are hashed while they
    stream instead (`location.py`), so only their sizes are checked here, from one listing.
    """
    location = dataset_location(root)
    shards = [shard for split_name in splits or list(manifest.splits) for shard in manifest.split(split_name).shards]
    if location.local is None:
        stored = location.sizes()
        for shard in shards:
            if shard.name not in stored:
                raise StrideError(f"shard {location.member(shard.name)} listed in {location.member(MANIFEST_NAME)} "
                                  "is missing")
            if stored[shard.name] != shard.num_bytes:
                raise StrideError(f"shard {location.member(shard.name)} has {stored[shard.name]} bytes, the manifest "
                                  f"says {shard.num_bytes} (truncated or replaced?)")
        return
    root = location.local
    seen = []
    for shard in shards:
        path = root / shard.name
        if not path.is_file():
            raise StrideError(f"shard {path} listed in {root / MANIFEST_NAME} is missing")
        stat = path.stat()
        if stat.st_size != shard.num_bytes:
            raise StrideError(f"shard {path} has {stat.st_size} bytes, the manifest says {shard.num_bytes} "
                              "(truncated or replaced?)")
        seen.append((shard.name, shard.sha256, stat.st_size, stat.st_mtime_ns))
    key = (str(root.resolve()), tuple(seen))
    if not checksums or key in _VERIFIED:
        return
    for shard in shards:
        path = root / shard.name
        if sha256_of(path) != shard.sha256:
            raise StrideError(f"shard {path}: sha256 does not match {root / MANIFEST_NAME} (corrupted?)")
    _VERIFIED.add(key)
