"""Training throughput: the real stride path, and a bare PyTorch loop on the same network."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import move_data_to_device

from stride.benchmarking.timing import Throughput, cpu_s, now_s
from stride.config.schema import StrideConfig
from stride.lightning_modules.base import build_optimizer
from stride.tasks import DataFacts, get_task
from stride.tracking.contract import BENCH_EXPERIMENT
from stride.training import Launch, open_datamodule, train
from stride.training.speed import prepare_network, resolve_precision


class StepTimer(pl.Callback):
    """Wall time from the end of step `warmup_steps` to the end of step `warmup_steps + steps`."""

    def __init__(self, warmup_steps: int, steps: int):
        if warmup_steps < 1:
            raise ValueError("at least one warm-up step is needed to start the clock after it")
        self.warmup_steps, self.steps = warmup_steps, steps
        self.started_s: float | None = None
        self.finished_s: float | None = None
        self.cpu_started_s = self.cpu_finished_s = 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.warmup_steps:
            self.started_s, self.cpu_started_s = now_s(pl_module.device), cpu_s()
        elif trainer.global_step == self.warmup_steps + self.steps:
            self.finished_s, self.cpu_finished_s = now_s(pl_module.device), cpu_s()


def stride_throughput(config: StrideConfig, *, steps: int, warmup_steps: int, tracking_uri: str | None,
                      workdir: str) -> Throughput:
    """`stride train`'s path (the training core, its datamodule and module, the MLflow recorder)
    without validation or testing, logged as a run of the experiment `stride-bench` in `tracking_uri`
    (None: no recorder, for machines without MLflow such as the GPU lane's)."""
    config = config.model_copy(deep=True)
    config.tracking.experiment = BENCH_EXPERIMENT
    timer = StepTimer(warmup_steps, steps)
    launch = Launch(test=False, trainer_overrides=dict(max_epochs=-1, max_steps=warmup_steps + steps,
                                                       limit_val_batches=0, num_sanity_val_steps=0,
                                                       default_root_dir=workdir))
    with contextlib.ExitStack() as stack:
        callbacks: list[pl.Callback] = [timer]
        loggers: list[Logger] = []
        if tracking_uri is not None:
            from stride.tracking.recorder import RunRecorder
            from stride.tracking.run import MlflowRun

            run = stack.enter_context(MlflowRun(tracking_uri, config, run_name=f"bench {config.name}"))
            recorder = RunRecorder(run)
            callbacks, loggers = [timer, *recorder.callbacks], recorder.loggers
        with contextlib.redirect_stdout(sys.stderr):  # Lightning's progress bar writes to stdout
            train(config, callbacks=callbacks, loggers=loggers, launch=launch)
    assert timer.started_s is not None and timer.finished_s is not None, "training stopped before the last step"
    return Throughput(steps * config.data.batch_size, timer.finished_s - timer.started_s,
                      timer.cpu_finished_s - timer.cpu_started_s)


def build_network(config: StrideConfig) -> torch.nn.Module:
    """The network the stride path trains (normalisation folded in), built the same way."""
    facts = DataFacts.of(open_datamodule(config, num_workers=0))
    return cast(torch.nn.Module, get_task(config.task).module(config, facts).network)


def preloaded_batches(config: StrideConfig, device: torch.device, count: int) -> list[Any]:
    """`count` training batches on the device, as the model consumes them (no augmentation)."""
    datamodule = open_datamodule(config, num_workers=0)
    batches: list[Any] = []
    while len(batches) < count:
        for batch in datamodule.train_dataloader():
            batches.append(datamodule.on_after_batch_transfer(move_data_to_device(batch, device), 0))
            if len(batches) == count:
                break
    return batches


def precision_context(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "bf16-mixed":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return lambda: torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext


def bare_throughput(config: StrideConfig, *, steps: int, warmup_steps: int, device: torch.device,
                    distinct_batches: int = 16) -> Throughput:
    """The loop everyone writes by hand: forward, the task's loss, backward, step, zero_grad.

    Same network (from the registry, normalisation folded in), optimiser, batch size,
    precision, channels_last and compilation as the stride path; no scheduler, metrics,
    augmentation or data loading.
    """
    pl.seed_everything(config.trainer.seed, verbose=False)
    network = build_network(config).to(device).train()
    precision = resolve_precision(config.trainer)
    if precision == "64-true":
        network.double()
    forward = prepare_network(network, config.trainer)
    optimizer = build_optimizer(network.parameters(), config.optim)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    autocast = precision_context(precision, device)
    clip = config.trainer.gradient_clip_val
    batches = preloaded_batches(config, device, min(distinct_batches, steps))
    if precision == "64-true":
        batches = [(batch[0].double(), *batch[1:]) for batch in batches]
    task = get_task(config.task)

    started = cpu_started = 0.0
    for index in range(warmup_steps + steps):
        if index == warmup_steps:
            started, cpu_started = now_s(device), cpu_s()
        with autocast():
            loss = task.batch_loss(network, batches[index % len(batches)], forward)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(network.parameters(), clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return Throughput(steps * config.data.batch_size, now_s(device) - started, cpu_s() - cpu_started)
