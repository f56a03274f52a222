"""Where a dataset lives: a local folder or an `s3://bucket/prefix`, read through one small interface.

A dataset is the same either way: `manifest.json` beside its shards and extra files (docs/datasets.md).
What differs is when the shards are checked. A folder's shards are hashed once per process before
training (`manifest.verify_shards`). A bucket's are checked by size from one listing up front and
hashed *while they stream*: `open_shard` returns a reader whose `finish()` compares the bytes that
went by with the manifest's size and sha256 and raises naming the object when they differ; nothing
is downloaded first.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from stride.datamodules import s3
from stride.datamodules.digest import MANIFEST_NAME
from stride.errors import StrideError

READ_BUFFER_BYTES = 1 << 20


class ShardReader(Protocol):
    stream: io.BufferedReader

    def finish(self) -> None:
        """Called after the whole shard was read: raise if its bytes are not the manifest's."""

    def close(self) -> None: ...


@dataclass
class _FileShard:
    stream: io.BufferedReader

    def finish(self) -> None:
        """Local shards were hashed before training (manifest.verify_shards)."""

    def close(self) -> None:
        self.stream.close()


@dataclass(frozen=True)
class LocalFolder:
    path: Path

    @property
    def uri(self) -> str:
        return str(self.path)

    @property
    def local(self) -> Path:
        return self.path

    @property
    def absolute_uri(self) -> str:
        return str(self.path.absolute())

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:
        """`Path(datamodule.root)` goes on working for a folder (plugins written before buckets did that)."""
        return str(self.path)

    def member(self, name: str) -> str:
        return str(self.path / name)

    def read_bytes(self, name: str, max_bytes: int) -> bytes:
        path = self.path / name
        if not path.is_file():
            raise StrideError(f"{path}: missing" + (" (it is a folder)" if path.is_dir() else ""))
        if (size := path.stat().st_size) > max_bytes:
            raise StrideError(f"{path} has {size} bytes, more than the {max_bytes} such a file may have")
        return path.read_bytes()

    def open_shard(self, name: str, num_bytes: int, sha256: str) -> ShardReader:
        return _FileShard(open(self.path / name, "rb"))

    def sizes(self) -> dict[str, int]:
        if not self.path.is_dir():
            return {}
        return {p.name: p.stat().st_size for p in self.path.iterdir() if p.is_file()}


class _VerifiedObject(io.RawIOBase):
    """Counts and hashes every byte read from an object, in order, to check it against the manifest."""

    def __init__(self, reader: s3.ObjectReader, num_bytes: int, sha256: str):
        super().__init__()
        self.reader, self.num_bytes, self.sha256 = reader, num_bytes, sha256
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self.reader.readinto(buffer)
        self.digest.update(memoryview(buffer)[:count])
        return count

    def close(self) -> None:
        self.reader.close()
        super().close()


class _ObjectShard:
    def __init__(self, bucket: str, key: str, num_bytes: int, sha256: str):
        self._raw = _VerifiedObject(s3.ObjectReader(bucket, key, num_bytes), num_bytes, sha256)
        self.stream = io.BufferedReader(cast(Any, self._raw), READ_BUFFER_BYTES)

    def finish(self) -> None:
        while self.stream.read(READ_BUFFER_BYTES):  # the tar padding after the end-of-archive block
            pass
        raw = self._raw
        if raw.reader.offset != raw.num_bytes or raw.digest.hexdigest() != raw.sha256:
            raise StrideError(f"shard {raw.reader.uri}: its bytes do not match the manifest's size and sha256 "
                              f"({raw.reader.offset} bytes read, {raw.num_bytes} expected); altered or replaced "
                              "in the bucket?")

    def close(self) -> None:
        self.stream.close()


@dataclass(frozen=True)
class S3Prefix:
    bucket: str
    prefix: str  # without slashes at either end; "" for the bucket's top

    @property
    def uri(self) -> str:
        return f"{s3.SCHEME}{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def local(self) -> None:
        return None

    @property
    def absolute_uri(self) -> str:
        return self.uri

    def __str__(self) -> str:
        return self.uri

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def member(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def read_bytes(self, name: str, max_bytes: int) -> bytes:
        try:
            response = s3.client().get_object(Bucket=self.bucket, Key=self.key(name))
            if response["ContentLength"] > max_bytes:
                raise StrideError(f"{self.member(name)} has {response['ContentLength']} bytes, more than the "
                                  f"{max_bytes} such a file may have")
            return response["Body"].read()
        except s3.storage_errors() as err:
            raise s3.explain(err, self.member(name), "read") from None

    def open_shard(self, name: str, num_bytes: int, sha256: str) -> ShardReader:
        return _ObjectShard(self.bucket, self.key(name), num_bytes, sha256)

    def sizes(self) -> dict[str, int]:
        found: dict[str, int] = {}
        start = self.key("")
        try:
            pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start,
                                                                             Delimiter="/")
            for page in pages:
                for item in page.get("Contents", []):
                    found[item["Key"][len(start):]] = int(item["Size"])
        except s3.storage_errors() as err:
            raise s3.explain(err, self.uri + "/", "list") from None
        return found

    def has_manifest(self) -> bool:
        return MANIFEST_NAME in self.sizes()


DatasetLocation = LocalFolder | S3Prefix


def dataset_location(path: str | Path | DatasetLocation) -> DatasetLocation:
    """The location `data.path` (or `--out`, `--data`) names; an unsupported URI scheme is an error here."""
    if isinstance(path, LocalFolder | S3Prefix):  # already one
        return path
    if isinstance(path, str):
        if s3.is_s3(path):
            return S3Prefix(*s3.split_s3_uri(path))
        s3.refuse_other_schemes(path, "dataset")
    return LocalFolder(Path(path))
