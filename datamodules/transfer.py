"""Moving a prepared dataset between a folder and a bucket, every shard's sha256 checked on the way.

Into a bucket, the manifest is the commit point: shards and extra files go up first and the
manifest last, so a reader sees the old dataset or the new one, never part of one, and an upload
cut short leaves only objects that no manifest names (nothing that reads as a dataset). Shards
are stored under content-addressed names (`train-000000-<sha256[:16]>.tar`): a replacement's
shards never overwrite the shards the old manifest still names, so `--overwrite` keeps a complete
dataset at the prefix at every moment, as the local journalled swap does. Shard objects no
manifest names (the replaced dataset's, or an interrupted upload's) are deleted after the new
manifest is in place; an upload that was cut short resumes, skipping shards already there.

Into a folder, the copy is written beside the target and moved into place by the local writer,
with the source manifest's bytes unchanged (the dataset keeps its identity, `dataset.manifest_sha256`).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from stride.datamodules import s3
from stride.datamodules.digest import MANIFEST_NAME
from stride.datamodules.location import READ_BUFFER_BYTES, DatasetLocation, S3Prefix, dataset_location
from stride.datamodules.manifest import (
    Manifest,
    ShardEntry,
    load_manifest,
    manifest_bytes,
    parse_manifest,
    verify_shards,
)
from stride.datamodules.writer import ShardWriter
from stride.errors import StrideError

CONTENT_NAME = re.compile(r"^(?P<stem>.+)-(?P<digest>[0-9a-f]{16})\.tar$")


def content_name(shard: ShardEntry) -> str:
    """The shard's name in a bucket: its stem and the first 16 hex digits of its sha256."""
    match = CONTENT_NAME.match(shard.name)
    if match and match["digest"] == shard.sha256[:16]:
        return shard.name
    stem = shard.name[:-4] if shard.name.endswith(".tar") else shard.name
    return f"{stem}-{shard.sha256[:16]}.tar"


def extra_files(manifest: Manifest, stored: dict[str, int]) -> list[str]:
    """The dataset's files besides manifest and shards (e.g. a captioning dataset's vocabulary.json)."""
    shards = {s.name for split in manifest.splits.values() for s in split.shards}
    return sorted(name for name in stored
                  if name != MANIFEST_NAME and name not in shards and not name.startswith(".") and
                  not name.endswith(".tar"))


def check_bucket_target(target: S3Prefix, overwrite: bool) -> None:
    """Refuse, before anything is prepared or uploaded, a prefix that holds a dataset (without --overwrite)
    or objects that are not a stride dataset's; reaching the bucket at all is checked here too."""
    stored = target.sizes()
    if MANIFEST_NAME in stored:
        if not overwrite:
            raise StrideError(f"a dataset already exists at {target}; pass --overwrite to replace it")
        return
    foreign = [name for name in stored if not name.endswith(".tar") and not name.startswith(".")]
    if foreign:
        raise StrideError(f"{target} holds objects but no stride dataset (e.g. {foreign[0]}); choose an empty or "
                          "new prefix")


def copy_dataset(source: str | Path | DatasetLocation, target: str | Path | DatasetLocation, *,
                 overwrite: bool = False) -> Manifest:
    """`stride data copy SOURCE TARGET`: folder or bucket to folder or bucket."""
    src, dst = dataset_location(source), dataset_location(target)
    if src == dst:
        raise StrideError(f"source and target are the same dataset ({src})")
    if isinstance(dst, S3Prefix):
        check_bucket_target(dst, overwrite)
        if src.local is not None:
            return upload_dataset(src.local, dst, overwrite=overwrite)
        with tempfile.TemporaryDirectory(prefix="stride-copy-") as staging:
            download_dataset(src, Path(staging) / "dataset")
            return upload_dataset(Path(staging) / "dataset", dst, overwrite=overwrite)
    assert dst.local is not None  # not a bucket: a folder
    return download_dataset(src, dst.local, overwrite=overwrite)


def download_dataset(source: DatasetLocation, folder: Path, *, overwrite: bool = False) -> Manifest:
    """Copy the dataset at `source` into `folder` (atomically, as `stride data prepare` writes one)."""
    raw_manifest = manifest_bytes(source)
    manifest = parse_manifest(raw_manifest, source.member(MANIFEST_NAME))
    verify_shards(source, manifest, checksums=True)  # a folder's hashed now, a bucket's sizes (hashed below)
    stored = source.sizes()
    shards = [shard for split in manifest.splits.values() for shard in split.shards]
    with ShardWriter(folder, overwrite=overwrite) as writer, \
            tqdm(total=sum(s.num_bytes for s in shards), unit="B", unit_scale=True,
                 desc=f"copying {manifest.dataset} to {folder}") as progress:
        for shard in shards:
            writer.copy_file(shard.name, _verified_chunks(source, shard, progress))
        for name in extra_files(manifest, stored):
            writer.copy_file(name, [source.read_bytes(name, stored[name])])
        writer.commit_copy(raw_manifest)
    verify_shards(folder, manifest, checksums=True)
    return manifest


def _verified_chunks(source: DatasetLocation, shard: ShardEntry, progress: tqdm) -> Iterator[bytes]:
    reader = source.open_shard(shard.name, shard.num_bytes, shard.sha256)
    try:
        while chunk := reader.stream.read(READ_BUFFER_BYTES):
            progress.update(len(chunk))
            yield chunk
        reader.finish()  # a bucket's shard: its sha256 against the manifest
    finally:
        reader.close()


def upload_dataset(folder: Path, target: S3Prefix, *, overwrite: bool = False) -> Manifest:
    """Upload the dataset in `folder` to `target`: shards, extra files, then the manifest; then tidy up."""
    manifest, _ = load_manifest(folder)
    verify_shards(folder, manifest, checksums=True)
    check_bucket_target(target, overwrite)
    stored = target.sizes()
    renamed = {shard.name: content_name(shard) for split in manifest.splits.values() for shard in split.shards}
    shards = [shard for split in manifest.splits.values() for shard in split.shards]
    client = s3.client()
    with tqdm(total=sum(s.num_bytes for s in shards), unit="B", unit_scale=True,
              desc=f"uploading {manifest.dataset} to {target}") as progress:
        for shard in shards:
            name = renamed[shard.name]
            if stored.get(name) != shard.num_bytes:  # a resumed upload skips what is there (hashed when read)
                _put(client, folder / shard.name, target, name)
            progress.update(shard.num_bytes)
    local_files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    for name in extra_files(manifest, local_files):
        if name in stored and target.read_bytes(name, local_files[name] + 1) != (folder / name).read_bytes():
            raise StrideError(f"{target.member(name)} differs from {folder / name}: replacing it before the new "
                              "manifest is in place would change the dataset that is there now; upload to a new "
                              "prefix instead")
        _put(client, folder / name, target, name)
    if all(renamed[name] == name for name in renamed):
        uploaded = manifest
        body = (folder / MANIFEST_NAME).read_bytes()  # byte for byte: the dataset keeps its identity
    else:
        uploaded = manifest.model_copy(deep=True)
        for split in uploaded.splits.values():
            for shard in split.shards:
                shard.name = renamed[shard.name]
        body = (json.dumps(uploaded.model_dump(), indent=2) + "\n").encode()
    _put_bytes(client, body, target, MANIFEST_NAME)  # the commit point
    _delete_unlisted_shards(client, target, set(renamed.values()))
    return uploaded


def _put(client, path: Path, target: S3Prefix, name: str) -> None:
    try:
        client.upload_file(str(path), target.bucket, target.key(name))
    except Exception as err:  # noqa: BLE001 - boto3's transfer manager wraps botocore's errors in its own
        cause = err.__cause__ if isinstance(err.__cause__, Exception) else err
        raise s3.explain(cause, target.member(name), "upload") from None


def _put_bytes(client, body: bytes, target: S3Prefix, name: str) -> None:
    try:
        client.put_object(Bucket=target.bucket, Key=target.key(name), Body=body)
    except s3.storage_errors() as err:
        raise s3.explain(err, target.member(name), "write") from None


def _delete_unlisted_shards(client, target: S3Prefix, listed: set[str]) -> None:
    """Shard objects no manifest names any more: the replaced dataset's and interrupted uploads'."""
    for name in target.sizes():
        if name.endswith(".tar") and name not in listed:
            try:
                client.delete_object(Bucket=target.bucket, Key=target.key(name))
            except s3.storage_errors() as err:
                raise s3.explain(err, target.member(name), "delete the replaced shard") from None
