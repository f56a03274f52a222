"""`manifest.json`: what a sharded dataset holds and how to check it.

One manifest per dataset folder. It records the format version, the dataset's name
and source, the parameters that produced it, the sample schema (one entry per tar
member extension), class names, normalisation statistics of the training split, and
for every split its shards with their sample counts, byte sizes and sha256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError, field_validator

from stride.bounded_loading import read_json_file
from stride.datamodules.digest import MANIFEST_NAME, manifest_sha256, sha256_of
from stride.datamodules.swap import finish_swap
from stride.errors import StrideError
from stride.names import plain_name

__all__ = ["MANIFEST_NAME", "Manifest", "ShardEntry", "SplitEntry", "manifest_sha256", "read_manifest", "sha256_of",
           "verify_shards"]

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


def read_manifest(root: str | Path) -> Manifest:
    finish_swap(Path(root).absolute())  # a replacement killed half-way is rolled forward first
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        hint = "" if Path(root).exists() else " (the folder does not exist; create it with `stride data prepare`)"
        raise StrideError(f"no dataset at {root}: {path} not found{hint}")
    data = read_json_file(path, max_bytes=MAX_MANIFEST_BYTES)
    if isinstance(data, dict) and data.get("format_version") != FORMAT_VERSION:
        raise StrideError(f"{path}: format_version {data.get('format_version')!r} is not supported "
                          f"(expected {FORMAT_VERSION})")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise StrideError(f"{path}: invalid manifest at {key}: {first['msg']}") from None
    for name, split in manifest.splits.items():
        counted = sum(shard.num_samples for shard in split.shards)
        if counted != split.num_samples:
            raise StrideError(f"{path}: split {name!r} says num_samples {split.num_samples}, but its shards hold "
                              f"{counted}; the manifest was edited or is damaged")
    return manifest


_VERIFIED: set[tuple] = set()  # datasets whose shards this process has hashed, with their sizes and mtimes


def verify_shards(root: str | Path, manifest: Manifest, splits: list[str] | None = None,
                  checksums: bool = True) -> None:
    """Raise naming the first shard that is missing, of the wrong size, or whose sha256 differs.

    Sizes are checked every time; the sha256 of a dataset's shards once per process (again if
    any shard's size or modification time changed since).
    """
    root = Path(root)
    shards = [shard for split_name in splits or list(manifest.splits) for shard in manifest.split(split_name).shards]
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
