"""The one training core: a config in, a fitted and tested model out, whoever launches it.

`stride train`, Tune trials, Ray Train workers and `stride bench` all call `train()`. It
builds the datamodule and module through the task interface, fits, tests the best
checkpoint and returns the numbers. It knows nothing of Ray, MLflow or the command line:
launchers inject those as Lightning callbacks and loggers plus a `Launch` (strategy,
plugins, resume checkpoint, ...).
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from stride.config.components import build_components
from stride.config.schema import StrideConfig
from stride.datamodules.sharded import ShardedDataModule
from stride.errors import StrideError
from stride.names import safe_filename
from stride.tasks import DataFacts, get_task
from stride.training.checkpoints import load_weights, resumed_epoch
from stride.training.guards import NonFiniteLossGuard
from stride.training.history import EpochHistory
from stride.training.speed import apply_speed_options, resolve_precision

# Known-harmless warnings of the pinned libraries, printed on every run: the shard streams split
# themselves across loader workers (so their __len__ is exact), and Lightning's own pytree use.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
warnings.filterwarnings("ignore",
                        message=r"The number of training batches \(\d+\) is smaller than the logging interval")


@dataclass
class Launch:
    """How a launcher runs the core; everything about the model and data is in the config."""

    strategy: Any = None  # a Lightning strategy object or name; None: config.trainer.strategy
    plugins: Sequence[Any] = ()  # e.g. Ray's RayLightningEnvironment
    accelerator: str | None = None  # None: config.trainer.accelerator
    devices: int | str | None = None  # None: config.trainer.devices
    resume_checkpoint: str | None = None  # a full Lightning checkpoint to continue from
    # sha256 of every shard: once per dataset in the process that launches the work, whose
    # children (trials, Ray Train workers) then check sizes only
    verify_checksums: bool = True
    checkpoint_dir: str | None = None  # None: a new folder under config.trainer.checkpoint_dir
    test: bool = True  # False: fit only (no checkpoints kept, nothing tested), as `stride bench` times it
    trainer_overrides: dict[str, Any] = field(default_factory=dict)  # any other pl.Trainer argument
    prepare: Callable[[pl.Trainer], pl.Trainer] | None = None  # e.g. Ray Train's prepare_trainer


@dataclass
class TrainOutcome:
    """What a launcher gets back, and publishes where it records runs (figures, the model)."""

    test_metrics: dict[str, float]
    best_checkpoint: str | None
    best_score: float | None  # the monitored metric at the best checkpoint
    history: list[dict[str, float]]  # one row per epoch
    facts: DataFacts
    wall_time_s: float
    module: pl.LightningModule  # as tested: the best checkpoint's weights (the last epoch's when not tested)


def open_datamodule(config: StrideConfig, *, verify_checksums: bool = True, **overrides: Any) -> ShardedDataModule:
    """The task's datamodule with every shard checked (sizes; sha256 once per process)."""
    datamodule = get_task(config.task).datamodule(config, verify_checksums=verify_checksums, **overrides)
    datamodule.setup("fit")
    return datamodule


def make_trainer(config: StrideConfig, callbacks: Sequence[pl.Callback], loggers: Sequence[Logger] = (),
                 launch: Launch | None = None) -> pl.Trainer:
    launch = launch or Launch()
    t = config.trainer
    callbacks = list(callbacks)
    if t.enable_progress_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
        # each refresh reads the step loss back from the device; once per step would stall the GPU
        callbacks.append(TQDMProgressBar(refresh_rate=t.log_every_n_steps))
    kwargs: dict[str, Any] = dict(
        max_epochs=t.max_epochs, max_steps=t.max_steps, limit_train_batches=t.limit_train_batches,
        accelerator=launch.accelerator or t.accelerator,
        devices=launch.devices or t.devices, strategy=launch.strategy or t.strategy,
        plugins=list(launch.plugins) or None, precision=resolve_precision(t), deterministic=t.deterministic,
        log_every_n_steps=t.log_every_n_steps, gradient_clip_val=t.gradient_clip_val, callbacks=callbacks,
        enable_progress_bar=t.enable_progress_bar, logger=list(loggers) or False, enable_model_summary=False,
        enable_checkpointing=launch.test,
        use_distributed_sampler=False,  # the shard streams split data across ranks themselves
    )
    kwargs.update(launch.trainer_overrides)
    trainer = pl.Trainer(**kwargs)
    return launch.prepare(trainer) if launch.prepare else trainer


def train(config: StrideConfig, *, callbacks: Sequence[pl.Callback] = (), loggers: Sequence[Logger] = (),
          launch: Launch | None = None) -> TrainOutcome:
    """Fit `config`, test its best checkpoint (by `trainer.monitor`) and return the numbers."""
    launch = launch or Launch()
    started = time.perf_counter()
    task = get_task(config.task)
    # only global rank 0 hashes (other DDP ranks of this launch check sizes); Lightning sets `rank` on
    # `rank_zero_only` at import, an attribute its type lacks
    datamodule = open_datamodule(config,
                                 verify_checksums=launch.verify_checksums and cast(Any, rank_zero_only).rank == 0)
    if launch.resume_checkpoint:  # go on with that epoch's data order, not epoch 0's again
        datamodule.start_training_at(resumed_epoch(launch.resume_checkpoint))
    facts = DataFacts.of(datamodule)
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    module = apply_speed_options(task.module(config, facts), config.trainer)

    history = EpochHistory()
    own: list[pl.Callback] = [NonFiniteLossGuard(config.trainer.log_every_n_steps), history]
    monitor, mode = config.trainer.monitor, config.trainer.monitor_mode
    assert monitor is not None and mode is not None, "filled in by config validation"
    checkpoint = None
    if launch.test:
        folder = launch.checkpoint_dir or (Path(config.trainer.checkpoint_dir) /
                                           f"{safe_filename(config.name)}-{uuid.uuid4().hex[:8]}")
        checkpoint = ModelCheckpoint(dirpath=folder, filename="best-{epoch}", monitor=monitor,
                                     mode=mode, save_top_k=1, save_last=True)
        own.append(checkpoint)
    own += build_components("callbacks", config.callbacks, monitor, mode)
    loggers = [*loggers, *build_components("loggers", config.loggers, monitor, mode)]
    trainer = make_trainer(config, [*own, *callbacks], loggers, launch)
    trainer.fit(module, datamodule=datamodule, ckpt_path=launch.resume_checkpoint, weights_only=True)
    if checkpoint is None:
        return TrainOutcome({}, None, None, history.history, facts, time.perf_counter() - started, module)

    best = checkpoint.best_model_path or checkpoint.last_model_path
    if not best or not os.path.exists(best):
        raise StrideError(f"training produced no checkpoint (is trainer.monitor={config.trainer.monitor!r} logged?)")
    load_weights(module, best)
    tested = trainer.test(module, datamodule=datamodule, verbose=False)
    test_metrics = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
    best_score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
    return TrainOutcome(test_metrics, best, best_score, history.history, facts, time.perf_counter() - started,
                        module)
