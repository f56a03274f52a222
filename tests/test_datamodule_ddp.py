"""Under DDP every rank gets the same number of training batches of disjoint samples, and
every evaluation sample is seen exactly once across ranks. Two real gloo processes."""

import json
import os

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from stride.datamodules.image_classification import ImageClassificationData
from stride.datamodules.manifest import read_manifest
from stride.datamodules.streaming import KEY_FIELD, split_evenly

pytestmark = pytest.mark.slow  # end to end: real Lightning, MLflow, Ray or processes

WORLD = 2
EPOCHS = 2


def keys_only(samples):
    return [key for key, _ in samples]


def collect(rank: int, root: str, port: int, num_workers: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    datamodule = ImageClassificationData(root, batch_size=100, eval_batch_size=64, num_workers=num_workers,
                                         shuffle_buffer=200)
    datamodule.fields = (KEY_FIELD, "cls")
    datamodule.collate = keys_only
    datamodule.setup("fit")
    seen = {"train": [], "val": [], "test": [], "train_len": len(datamodule.train_dataloader()), "distinct": []}
    loader = datamodule.train_dataloader()
    stream = datamodule.stream("train")
    workers = max(1, num_workers)
    for epoch in range(EPOCHS):
        seen["train"].append([batch for batch in loader])
        # each loader slot repeats samples only once its own shards are used up: distinct samples per
        # rank are, over its slots, min(samples the slot holds, samples its batch quota asks for)
        seen["distinct"].append(sum(
            min(stream._slot_plan(w, epoch).num_samples, split_evenly(stream.batches_per_rank, workers, w) * 100)
            for w in range(workers)))
    for split in ("val", "test"):
        batches = list(datamodule.loader(split))
        seen[split] = [key for batch in batches for key in batch]
        seen[f"{split}_batches"] = len(batches)
        seen[f"{split}_len"] = len(datamodule.loader(split))
    with open(f"{out}.{rank}", "w") as handle:
        json.dump(seen, handle)
    dist.barrier()
    dist.destroy_process_group()


# ranks x loader workers: 90 s of process starts, run with `pytest -m cluster` (CI runs ranks alone)
@pytest.mark.parametrize("num_workers", [0, pytest.param(2, marks=pytest.mark.cluster)])
def test_ranks_split_samples_correctly(digits_shards, tmp_path, num_workers):
    from conftest import free_port

    out = str(tmp_path / "seen")
    mp.spawn(collect, args=(str(digits_shards), free_port(), num_workers, out), nprocs=WORLD, join=True)
    ranks = [json.loads(open(f"{out}.{rank}").read()) for rank in range(WORLD)]
    manifest = read_manifest(digits_shards)
    expected_batches = manifest.split("train").num_samples // (WORLD * 100)  # 6

    for epoch in range(EPOCHS):
        batches = [rank["train"][epoch] for rank in ranks]
        assert [len(b) for b in batches] == [expected_batches] * WORLD  # equal batch counts: no DDP hang
        assert all(len(batch) == 100 for rank_batches in batches for batch in rank_batches)
        keys = [{key for batch in rank_batches for key in batch} for rank_batches in batches]
        for rank, rank_keys in zip(ranks, keys):
            assert len(rank_keys) == rank["distinct"][epoch]  # no repeat before a slot's shards are used up
        assert not keys[0] & keys[1]  # disjoint across ranks
    assert ranks[0]["train"][0] != ranks[0]["train"][1]  # reshuffled between epochs
    assert all(rank["train_len"] == expected_batches for rank in ranks)

    for split in ("val", "test"):
        everything = ranks[0][split] + ranks[1][split]
        assert sorted(everything) == sorted(set(everything))  # nothing twice
        assert len(everything) == manifest.split(split).num_samples  # nothing missed
        for rank in ranks:
            assert rank[f"{split}_len"] == rank[f"{split}_batches"]  # len() is what the loader really yields
            if num_workers == 0:
                assert rank[f"{split}_batches"] == -(-len(rank[split]) // 64)  # one partial batch at most
