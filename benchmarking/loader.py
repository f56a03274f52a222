"""Samples per second that a datamodule delivers from its shards onto the device."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pytorch_lightning.utilities import move_data_to_device

from stride.benchmarking.timing import Throughput, now_s
from stride.config.schema import StrideConfig
from stride.training import open_datamodule


def endless(loader: torch.utils.data.DataLoader) -> Iterator:
    """Epoch after epoch, as training sees them (each epoch restarts the shard streams)."""
    while True:
        yield from loader


def loader_throughput(config: StrideConfig, num_workers: int, *, batches: int, warmup_batches: int,
                      device: torch.device) -> Throughput:
    """Time `batches` training batches after `warmup_batches` (which absorb worker start-up).

    Each batch is copied to the device (asynchronously from pinned memory on a GPU) and
    turned into what the model consumes, as in training; augmentation is left out.
    """
    # data.cache=device: the splits on the measured device, its memory budget checked there
    datamodule = open_datamodule(config, num_workers=num_workers, cache_device=device)
    batches_iter = endless(datamodule.train_dataloader())
    samples = 0
    started = 0.0
    for index in range(warmup_batches + batches):
        if index == warmup_batches:
            started = now_s(device)
        batch = next(batches_iter)  # (inputs, labels), (images, targets) or a caption batch: inputs first
        inputs = datamodule.on_after_batch_transfer(move_data_to_device(batch, device), 0)[0]
        if index >= warmup_batches:
            samples += len(inputs)
    seconds = now_s(device) - started
    del batches_iter  # shuts the workers down
    return Throughput(samples, seconds)
