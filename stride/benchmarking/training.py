"""Training throughput: the real stride path, and a bare PyTorch loop on the same network."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable

import mlflow
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from stride.benchmarking.timing import Throughput, cpu_s, now_s
from stride.config.schema import StrideConfig
from stride.lightning_modules.classification import build_optimizer
from stride.pipelines.speed import apply_speed_options, prepare_network, resolve_precision
from stride.pipelines.tasks import build_datamodule, build_module, build_network
from stride.pipelines.train import make_trainer
from stride.tracking.callback import MlflowEpochMetrics
from stride.tracking.store import use_store


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


def stride_throughput(config: StrideConfig, *, steps: int, warmup_steps: int, tracking_uri: str,
                      workdir: str) -> Throughput:
    """`stride train`'s path (datamodule, module, trainer, MLflow epoch metrics) without validation,
    logged as a run of the experiment `stride-bench` in `tracking_uri`."""
    datamodule = build_datamodule(config)
    datamodule.setup("fit")
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    module = apply_speed_options(build_module(config, datamodule), config.trainer)
    timer = StepTimer(warmup_steps, steps)
    previous_uri = mlflow.get_tracking_uri()
    use_store(tracking_uri, "stride-bench")
    try:
        with mlflow.start_run(run_name=f"bench {config.name}") as run:
            mlflow.log_params({"recipe": config.name, "batch_size": config.data.batch_size})
            trainer = make_trainer(config, [timer, MlflowEpochMetrics(run.info.run_id)], max_epochs=-1,
                                   max_steps=warmup_steps + steps, limit_val_batches=0, num_sanity_val_steps=0,
                                   enable_checkpointing=False, default_root_dir=workdir)
            with contextlib.redirect_stdout(sys.stderr):  # Lightning's progress bar writes to stdout
                trainer.fit(module, datamodule=datamodule)
    finally:
        mlflow.set_tracking_uri(previous_uri)
    assert timer.started_s is not None and timer.finished_s is not None, "training stopped before the last step"
    return Throughput(steps * config.data.batch_size, timer.finished_s - timer.started_s,
                      timer.cpu_finished_s - timer.cpu_started_s)


def preloaded_batches(config: StrideConfig, device: torch.device, count: int) -> list[tuple[torch.Tensor, ...]]:
    """`count` training batches on the device, as the model consumes them (no augmentation)."""
    datamodule = build_datamodule(config, num_workers=0)
    datamodule.setup("fit")
    batches = []
    while len(batches) < count:
        for inputs, labels in datamodule.train_dataloader():
            batches.append(datamodule.on_after_batch_transfer((inputs.to(device), labels.to(device)), 0))
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
    """The loop everyone writes by hand: forward, cross-entropy, backward, step, zero_grad.

    Same network (from the registry, normalisation folded in), optimiser, batch size,
    precision, channels_last and compilation as the stride path; no scheduler, metrics,
    augmentation or data loading.
    """
    datamodule = build_datamodule(config, num_workers=0)
    pl.seed_everything(config.trainer.seed, verbose=False)
    network = build_network(config, datamodule).to(device).train()
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
        batches = [(inputs.double(), labels) for inputs, labels in batches]

    started = cpu_started = 0.0
    for index in range(warmup_steps + steps):
        if index == warmup_steps:
            started, cpu_started = now_s(device), cpu_s()
        inputs, labels = batches[index % len(batches)]
        with autocast():
            loss = F.cross_entropy(forward(inputs), labels)
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
