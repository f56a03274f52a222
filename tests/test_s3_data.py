"""Datasets in a bucket: prepared into, streamed from and copied through a real S3-compatible server.

The server is moto's standalone server on 127.0.0.1 (tests/s3_server.py); stride talks to it over
HTTP with boto3, configured only through the standard AWS environment.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time

import boto3
import pytest
from s3_server import TEST_CREDENTIALS, bucket, s3_env, s3_server, start_s3_server  # noqa: F401
from torch.utils.data import DataLoader

from stride.datamodules.cache import open_decoded_split
from stride.datamodules.image_classification import ImageClassificationData
from stride.datamodules.location import dataset_location
from stride.datamodules.manifest import load_manifest, read_manifest
from stride.datamodules.streaming import KEY_FIELD, ShardStream
from stride.datamodules.transfer import copy_dataset
from stride.errors import StrideError
from stride.pipelines.cli import main

pytestmark = pytest.mark.slow  # a real server subprocess


def keys_only(samples):
    return [key for key, _ in samples]


def prepare_digits_into(uri: str, *extra: str) -> None:
    assert main(["data", "prepare", "digits", "--out", uri, "--shard-size", "300", *extra]) == 0


def all_keys(root: str, split: str, *, rank: int, world: int, workers: int, training: bool) -> list[str]:
    manifest = read_manifest(root)
    stream = ShardStream(root, manifest.split(split).shards, (KEY_FIELD, "cls"), keys_only, batch_size=50,
                         training=training, rank=rank, world_size=world, num_workers=workers, shuffle_buffer=100)
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    return [key for batch in loader for key in batch]


def test_a_dataset_prepared_into_a_bucket_streams_like_the_local_one(bucket, tmp_path, capsys):
    uri = f"s3://{bucket}/datasets/digits"
    prepare_digits_into(uri)
    assert f"wrote {uri}" in capsys.readouterr().out
    stored = dataset_location(uri).sizes()
    manifest, identity = load_manifest(uri)
    names = [shard.name for split in manifest.splits.values() for shard in split.shards]
    assert set(stored) == {"manifest.json", *names}  # nothing else: the staging folder stayed local
    assert all(name.endswith(f"-{shard.sha256[:16]}.tar") for split in manifest.splits.values()
               for shard in split.shards for name in [shard.name])

    # every evaluation sample exactly once over 2 ranks x 2 loader workers (spawned readers of the bucket)
    test_keys = [k for rank in range(2) for k in all_keys(uri, "test", rank=rank, world=2, workers=2, training=False)]
    assert sorted(test_keys) == sorted(set(test_keys)) and len(test_keys) == manifest.split("test").num_samples
    # training: disjoint samples per rank, the same number of full batches on each
    per_rank = [all_keys(uri, "train", rank=rank, world=2, workers=2, training=True) for rank in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) > 0 and not set(per_rank[0]) & set(per_rank[1])

    # the bucket's copy in a folder: the same samples, the same manifest bytes (the same dataset identity)
    local = tmp_path / "copy"
    assert main(["data", "copy", uri, str(local)]) == 0
    assert load_manifest(local)[1] == identity
    assert all_keys(str(local), "val", rank=0, world=1, workers=0, training=False) == \
        all_keys(uri, "val", rank=0, world=1, workers=0, training=False)
    # ...and back into another prefix: already content-addressed, so byte for byte again
    assert main(["data", "copy", str(local), f"s3://{bucket}/copies/digits"]) == 0
    assert load_manifest(f"s3://{bucket}/copies/digits")[1] == identity


def test_a_memory_cache_is_built_from_the_bucket_once_per_node(bucket, tmp_path, monkeypatch):
    uri = f"s3://{bucket}/digits"
    prepare_digits_into(uri)
    monkeypatch.setenv("STRIDE_CACHE_DIR", str(tmp_path / "node-cache"))
    data = ImageClassificationData(uri, batch_size=64, cache="memory")
    data.prepare_data()
    data.setup("fit")
    decoded = open_decoded_split(uri, data.manifest, data.dataset_sha256, "val")
    assert len(decoded.keys) == data.manifest.split("val").num_samples
    cached = sorted(p.name for p in (tmp_path / "node-cache").iterdir())
    assert cached == sorted(f"{split}-{data.dataset_sha256[:32]}" for split in ("train", "val", "test"))
    batches = list(data.val_dataloader())
    assert sum(len(labels) for _, labels in batches) == data.manifest.split("val").num_samples


def test_a_shard_altered_missing_or_resized_in_the_bucket_is_named(bucket):
    uri = f"s3://{bucket}/digits"
    prepare_digits_into(uri)
    manifest = read_manifest(uri)
    client = boto3.client("s3")
    shard = manifest.split("val").shards[0]
    key = f"digits/{shard.name}"
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    label = tarfile.open(fileobj=io.BytesIO(bytes(body))).getmembers()[1]  # the first sample's .cls member
    body[label.offset_data + label.size] ^= 0xFF  # in its padding: the tar parses, only the digest can tell
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    data = ImageClassificationData(uri, batch_size=64)
    data.setup("validate")  # sizes agree: only streaming can tell
    with pytest.raises(StrideError, match=rf"shard s3://{bucket}/{key}: its bytes do not match"):
        list(data.val_dataloader())

    client.put_object(Bucket=bucket, Key=key, Body=bytes(body[:-512]))
    with pytest.raises(StrideError, match=rf"shard s3://{bucket}/{key} has {len(body) - 512} bytes, the manifest "
                                          f"says {len(body)}"):
        ImageClassificationData(uri, batch_size=64).setup("fit")
    client.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(StrideError, match=rf"shard s3://{bucket}/{key} listed in .* is missing"):
        ImageClassificationData(uri, batch_size=64).setup("fit")


def test_wrong_places_fail_with_what_to_fix(bucket, s3_env, monkeypatch):
    with pytest.raises(StrideError, match=r"no dataset at s3://.*/nothing-here: .*nothing is stored under that prefix"):
        read_manifest(f"s3://{bucket}/nothing-here")
    with pytest.raises(StrideError, match=r"s3://no-such-bucket-x1/digits/ .*the bucket does not exist"):
        read_manifest("s3://no-such-bucket-x1/digits")
    with pytest.raises(StrideError, match=r"only local folders and s3:// URIs are supported"):
        ImageClassificationData("gs://bucket/digits", batch_size=8)
    with pytest.raises(StrideError, match=r"not an s3://BUCKET/PREFIX URI"):
        read_manifest("s3://")


def run_stride(args: list[str], env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stride.pipelines.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_a_wrong_endpoint_and_denied_credentials_fail_fast_and_name_the_object(tmp_path, s3_env):
    closed = start_s3_server(tmp_path / "gone")
    closed.stop()  # nothing listens there any more
    started = time.monotonic()
    result = run_stride(["data", "prepare", "digits", "--out", "s3://stride-data/digits"],
                        {"AWS_ENDPOINT_URL_S3": closed.endpoint, "STRIDE_S3_MAX_ATTEMPTS": "2"})
    assert result.returncode != 0 and time.monotonic() - started < 60
    assert f"s3://stride-data/digits/ (endpoint {closed.endpoint}): the storage did not answer after 2 attempt(s)" \
        in result.stderr

    strict = start_s3_server(tmp_path / "auth", extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        result = run_stride(["data", "prepare", "digits", "--out", "s3://stride-data/digits"],
                            {"AWS_ENDPOINT_URL_S3": strict.endpoint})
    finally:
        strict.stop()
    assert result.returncode != 0 and "access denied (InvalidAccessKeyId)" in result.stderr
    for secret in TEST_CREDENTIALS.values():
        if secret != "us-east-1":
            assert secret not in result.stderr + result.stdout


def test_the_server_stopped_mid_epoch_is_an_error_naming_the_object_not_a_hang(tmp_path, s3_env, monkeypatch):
    server = start_s3_server(tmp_path / "server")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    monkeypatch.setenv("STRIDE_S3_MAX_ATTEMPTS", "2")
    try:
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="mid-epoch")
        prepare_digits_into("s3://mid-epoch/digits")
        data = ImageClassificationData("s3://mid-epoch/digits", batch_size=100, shuffle_buffer=10)
        data.setup("fit")
        batches = iter(data.train_dataloader())
        next(batches)
        server.stop()
        started = time.monotonic()
        with pytest.raises(StrideError, match=r"cannot read byte \d+ of s3://mid-epoch/digits/train-.*\.tar .*"
                                              r"did not answer after 2 attempt"):
            for _ in batches:
                pass
        assert time.monotonic() - started < 60
    finally:
        server.stop()


def test_an_interrupted_upload_leaves_no_dataset_and_an_overwrite_keeps_the_old_one_until_the_new_is_complete(
        bucket, s3_env, tmp_path, capsys):
    uri = f"s3://{bucket}/patches"
    client = boto3.client("s3")

    def upload_killed_after_first_shard(*extra: str) -> None:
        process = subprocess.Popen([sys.executable, "-m", "stride.pipelines.cli", "data", "prepare", "patches",
                                    "--out", uri, "--train-size", "3000", "--shard-size", "100", *extra],
                                   env={**os.environ, **s3_env}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="patches/").get("Contents", [])]
            if any(k.endswith(".tar") and k not in before for k in keys):
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL, "the upload finished before it could be interrupted"

    before: set[str] = set()
    upload_killed_after_first_shard()
    with pytest.raises(StrideError, match="no dataset at"):
        read_manifest(uri)  # shards without a manifest are nothing

    assert main(["data", "prepare", "patches", "--out", uri, "--train-size", "3000", "--shard-size", "100"]) == 0
    old_manifest, old_identity = load_manifest(uri)
    listed = {f"patches/{s.name}" for split in old_manifest.splits.values() for s in split.shards}
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="patches/")["Contents"]}
    assert keys == {*listed, "patches/manifest.json"}  # the interrupted upload's leftovers were tidied up

    before = keys
    upload_killed_after_first_shard("--overwrite", "--seed", "7")
    assert load_manifest(uri)[1] == old_identity  # the old dataset is still there, whole
    ImageClassificationData(uri, batch_size=64).setup("fit")
    assert sum(1 for _ in all_keys(uri, "val", rank=0, world=1, workers=0, training=False)) == \
        old_manifest.split("val").num_samples

    assert main(["data", "prepare", "patches", "--out", uri]) == 2
    assert f"a dataset already exists at {uri}; pass --overwrite" in capsys.readouterr().err
    assert main(["data", "prepare", "patches", "--out", uri, "--train-size", "3000", "--shard-size", "100",
                 "--overwrite", "--seed", "7"]) == 0
    new_manifest, new_identity = load_manifest(uri)
    assert new_identity != old_identity
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="patches/")["Contents"]}
    assert keys == {*(f"patches/{s.name}" for split in new_manifest.splits.values() for s in split.shards),
                    "patches/manifest.json"}


def test_copy_refuses_a_prefix_holding_other_things_and_checks_digests_of_a_folder(bucket, tmp_path, digits_shards):
    boto3.client("s3").put_object(Bucket=bucket, Key="mixed/notes.txt", Body=b"mine")
    with pytest.raises(StrideError, match=r"holds objects but no stride dataset \(e.g. notes.txt\)"):
        copy_dataset(digits_shards, f"s3://{bucket}/mixed")
    damaged = tmp_path / "damaged"
    copy_dataset(digits_shards, damaged)
    shard = read_manifest(damaged).split("train").shards[0]
    payload = bytearray((damaged / shard.name).read_bytes())
    payload[2000] ^= 0xFF
    (damaged / shard.name).write_bytes(bytes(payload))
    with pytest.raises(StrideError, match=f"shard {damaged / shard.name}: sha256 does not match"):
        copy_dataset(damaged, f"s3://{bucket}/damaged")
