"""`data.cache`: a split decoded once serves the very samples the shard streams do, and a cache that is
stale, truncated or altered is rebuilt, never used."""

import hashlib
import json
import os

import numpy as np
import pytest
import torch

from stride.datamodules.cache import CACHE_FOLDER, META_FILE, CachedStream, open_decoded_split
from stride.datamodules.image_classification import ImageClassificationData
from stride.datamodules.manifest import manifest_sha256, read_manifest
from stride.datamodules.sources.digits import prepare_digits
from stride.datamodules.streaming import KEY_FIELD, ShardStream
from stride.errors import StrideError


def as_list(samples):
    return samples


def streamed(root, split, *, rank=0, world=1, batch_size=64, training=False):
    """{key: (sha1 of the decoded pixels, label)} of one pass of the shard stream."""
    manifest = read_manifest(root)
    stream = ShardStream(root, manifest.split(split).shards, ("png", "cls", KEY_FIELD), as_list,
                         batch_size=batch_size, training=training, rank=rank, world_size=world)
    return {key: (hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest(), int(label))
            for batch in stream for image, label, key in batch}


def cached(root, split, *, rank=0, world=1, batch_size=64, training=False, seed=0):
    manifest = read_manifest(root)
    decoded = open_decoded_split(root, manifest, manifest_sha256(root), split)
    stream = CachedStream(decoded, manifest.split(split).shards, ("png", "cls", KEY_FIELD), batch_size=batch_size,
                          training=training, rank=rank, world_size=world, seed=seed)
    batches = list(stream)
    found = {key: (hashlib.sha1(image.numpy().tobytes()).hexdigest(), int(label))
             for images, labels, keys in batches for image, label, key in zip(images, labels, keys)}
    return found, batches, stream


@pytest.mark.parametrize("world", [1, 2, 3])
def test_evaluation_batches_hold_the_streamed_samples_byte_for_byte(digits_shards, world):
    for split in ("val", "test"):
        everything = {}
        for rank in range(world):
            found, batches, stream = cached(digits_shards, split, rank=rank, world=world)
            assert found == streamed(digits_shards, split, rank=rank, world=world)  # same part, same bytes
            assert len(batches) == len(stream) and all(len(b[0]) == 64 for b in batches[:-1])
            assert not everything.keys() & found.keys()
            everything.update(found)
        assert len(everything) == read_manifest(digits_shards).split(split).num_samples  # each sample once


def test_training_epochs_are_full_disjoint_reshuffled_batches_of_the_rank_part(digits_shards):
    world, batch = 2, 100
    parts = []
    for rank in range(world):
        manifest = read_manifest(digits_shards)
        decoded = open_decoded_split(digits_shards, manifest, manifest_sha256(digits_shards), "train")
        stream = CachedStream(decoded, manifest.split("train").shards, ("png", "cls", KEY_FIELD), batch_size=batch,
                              training=True, rank=rank, world_size=world)
        epochs = [[keys for _, _, keys in stream] for _ in range(2)]
        assert [len(e) for e in epochs] == [1257 // (world * batch)] * 2 == [len(stream)] * 2  # equal counts: no hang
        assert all(len(keys) == batch for epoch in epochs for keys in epoch)
        assert epochs[0] != epochs[1]  # a new permutation every epoch
        seen = {key for epoch in epochs for keys in epoch for key in keys}
        assert seen <= set(streamed(digits_shards, "train", rank=rank, world=world,
                                    training=False))  # only the rank's own part
        first = [key for keys in epochs[0] for key in keys]
        assert len(first) == len(set(first))  # no sample twice in an epoch
        parts.append(seen)
    assert not parts[0] & parts[1]


def test_datamodule_serves_cached_batches_like_streamed_ones(digits_shards):
    streaming = ImageClassificationData(digits_shards, batch_size=64)
    caching = ImageClassificationData(digits_shards, batch_size=64, cache="memory")
    for datamodule in (streaming, caching):
        datamodule.setup("fit")
    (images, labels), (cached_images, cached_labels) = next(iter(streaming.val_dataloader())), \
        next(iter(caching.val_dataloader()))
    assert cached_images.dtype == images.dtype == torch.uint8 and cached_labels.dtype == labels.dtype == torch.int64
    assert torch.equal(cached_images, images) and torch.equal(cached_labels, labels)
    assert len(caching.train_dataloader()) == len(streaming.train_dataloader())


def cache_dirs(root):
    return sorted(p for p in (root / CACHE_FOLDER).iterdir() if not p.name.startswith("."))


def test_truncated_or_altered_cache_is_rebuilt_and_a_new_dataset_gets_a_new_cache(tmp_path, caplog):
    caplog.set_level("WARNING", logger="stride.datamodules.cache")
    root = tmp_path / "digits"
    prepare_digits(root, samples_per_shard=600)
    reference, _, _ = cached(root, "val")
    [folder] = cache_dirs(root)
    pixels = folder / "png.npy"

    with open(pixels, "r+b") as handle:  # truncated
        handle.truncate(pixels.stat().st_size - 100)
    assert cached(root, "val")[0] == reference
    assert "rebuilding the decoded cache" in caplog.text and "wrong size (truncated?)" in caplog.text
    caplog.clear()

    data = bytearray(pixels.read_bytes())  # one flipped byte, size unchanged
    data[-1] ^= 0xFF
    pixels.write_bytes(bytes(data))
    os.utime(pixels, ns=(1, 1))  # even with an old timestamp
    assert cached(root, "val")[0] == reference
    assert "does not match its recorded sha256" in caplog.text

    (folder / META_FILE).write_text("{not json")
    assert cached(root, "val")[0] == reference
    assert json.loads((folder / META_FILE).read_text())["num_samples"] == 180

    prepare_digits(root, seed=1, overwrite=True, samples_per_shard=600)  # the source shards change
    changed, _, _ = cached(root, "val")
    assert changed != reference and changed == streamed(root, "val")
    assert len(cache_dirs(root)) == 1  # the dataset was replaced whole, old cache included
    assert not [p for p in (root / CACHE_FOLDER).iterdir() if p.name.startswith(".")]  # no temporaries


def test_a_cache_larger_than_the_budget_is_refused_naming_the_sizes(digits_shards):
    datamodule = ImageClassificationData(digits_shards, batch_size=64, cache="memory", cache_budget_bytes=2**20)
    with pytest.raises(StrideError, match=r"data.cache=memory needs 1\.4 MiB of host memory per rank "
                                          r"\(train 0\.9 MiB, val 0\.1 MiB, test 0\.3 MiB; 1 rank\(s\)\) but the "
                                          r"budget is 1\.0 MiB"):
        datamodule.setup("fit")


def test_unknown_cache_mode_is_refused(digits_shards):
    with pytest.raises(StrideError, match="data.cache must be one of none, memory, device, got 'disk'"):
        ImageClassificationData(digits_shards, batch_size=64, cache="disk")


def collect_rank(rank: int, root: str, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    datamodule = ImageClassificationData(root, batch_size=100, eval_batch_size=64, cache="memory")
    datamodule.fields = ("png", "cls", KEY_FIELD)
    datamodule.setup("fit")
    seen = {"train": [[list(keys) for _, _, keys in datamodule.train_dataloader()] for _ in range(2)]}
    for split in ("val", "test"):
        seen[split] = {key: hashlib.sha1(image.numpy().tobytes()).hexdigest()
                       for images, _, keys in datamodule.loader(split) for image, key in zip(images, keys)}
        seen[f"{split}_streamed"] = {key: digest for key, (digest, _) in streamed(root, split, rank=rank,
                                                                                   world=2).items()}
    with open(f"{out}.{rank}", "w") as handle:
        json.dump(seen, handle)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow  # two real gloo processes
def test_under_two_gloo_ranks_each_rank_caches_its_own_part(digits_shards, tmp_path):
    import torch.multiprocessing as mp
    from conftest import free_port

    out = str(tmp_path / "seen")
    mp.spawn(collect_rank, args=(str(digits_shards), free_port(), out), nprocs=2, join=True)
    ranks = [json.loads(open(f"{out}.{rank}").read()) for rank in range(2)]
    for epoch in range(2):
        counts = [len(rank["train"][epoch]) for rank in ranks]
        assert counts == [1257 // 200] * 2  # equal batch counts: no DDP hang
        keys = [{key for batch in rank["train"][epoch] for key in batch} for rank in ranks]
        assert not keys[0] & keys[1] and all(len(k) == 600 for k in keys)
    for split in ("val", "test"):
        for rank in ranks:
            assert rank[split] == rank[f"{split}_streamed"]  # byte-identical to the rank's streamed part
        assert len(ranks[0][split]) + len(ranks[1][split]) == read_manifest(digits_shards).split(split).num_samples
        assert not ranks[0][split].keys() & ranks[1][split].keys()
