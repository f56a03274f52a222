"""Evaluating a logged model on one split of a stride dataset, every sample exactly once.

The model evaluated is the logged MLflow model itself (what the registry serves), fed the
batches its task's datamodule makes, so the numbers are comparable with the run's own test
metrics. What is measured is the task's business (`Serving.evaluate`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from stride.datamodules.manifest import load_manifest
from stride.datamodules.sharded import ShardedDataModule
from stride.datamodules.streaming import decode_member, iter_stored_shard
from stride.errors import StrideError
from stride.serving import Evaluation, Serving


def check_dataset_identity(path: str | Path, expected_sha256: str | None, run_id: str) -> str:
    """The dataset's manifest sha256, if it is the one the run was trained on; else a StrideError."""
    actual = load_manifest(path)[1]
    if expected_sha256 and actual != expected_sha256:
        raise StrideError(f"dataset {path} has manifest sha256 {actual[:12]}..., but run {run_id} was trained on "
                          f"{expected_sha256[:12]}... (dataset.manifest_sha256); point --data at the dataset the "
                          "run used")
    return actual


def check_input_shape(model_shape: tuple[int, ...], data: ShardedDataModule, model_uri: str) -> None:
    """Equal shapes, where a -1 of the model's takes any size."""
    if len(model_shape) != len(data.input_shape) or any(m not in (-1, d) for m, d in zip(model_shape,
                                                                                       data.input_shape)):
        raise StrideError(f"model {model_uri} takes inputs of shape {list(model_shape)}, but dataset {data.root} "
                          f"holds samples of shape {list(data.input_shape)}")


@torch.no_grad()
def evaluate_network(serving: Serving, network: torch.nn.Module, data: ShardedDataModule, split: str = "test",
                     model_uri: str = "model", input_shape: tuple[int, ...] | None = None) -> Evaluation:
    """Stream `split` once through an exported network and check every sample was seen."""
    if input_shape is not None:
        check_input_shape(input_shape, data, model_uri)
    data.manifest.split(split)
    data.setup("test")  # verifies shard sizes and checksums
    try:
        evaluation = serving.evaluate(network, data, split, model_uri)
    except ValueError:  # e.g. numpy's "all input arrays must have the same shape", which names no sample
        misshapen = first_misshapen_sample(data, split)
        if misshapen is None:
            raise
        raise StrideError(misshapen) from None
    expected = data.manifest.split(split).num_samples
    if evaluation.samples != expected:
        raise StrideError(f"{data.root}: evaluated {evaluation.samples} {split} samples, the manifest lists {expected}")
    return evaluation


def first_misshapen_sample(data: ShardedDataModule, split: str) -> str | None:
    """The first sample of `split` with a member whose shape is not the one its manifest's sample_schema
    records, named by shard and key; read again only after a batch failed, so evaluating costs nothing more."""
    schema = data.manifest.sample_schema
    shaped = [f for f in data.fields if "shape" in schema.get(f, {})]
    for shard in data.manifest.split(split).shards:
        path = data.root.member(shard.name)
        for key, members in iter_stored_shard(data.root, shard, tuple(shaped)):
            for field in shaped:
                found, expected = list(decode_member(field, members[field]).shape), list(schema[field]["shape"])
                if found != expected:
                    return (f"shard {path}, sample {key!r}: .{field} has shape {found}; the manifest's sample_schema "
                            f"gives {expected} for every sample")
    return None
