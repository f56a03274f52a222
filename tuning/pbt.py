"""Population-based training (Jaderberg et al. 2017, "Population Based Training of Neural Networks"):
Ray's scheduler, bounded by the trials' epochs, and making a cloned trial train as itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from stride.config.schema import OptimConfig
from stride.tuning.spec import SchedulerSpec


class EpochBoundedPBT(PopulationBasedTraining):
    """Ray's `PopulationBasedTraining`, minus exploit steps at a trial's last epoch (`last_epoch`;
    None when training is bounded by steps).

    A trial that reported its last epoch has nothing left to train: cloning it then would only
    restart it to test the other trial's weights under its own name (two leaderboard rows of one
    model), holding a best checkpoint that the other trial may already have deleted.
    """

    def __init__(self, *, last_epoch: int | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.last_epoch = last_epoch

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self.last_epoch is not None and result.get(self._time_attr, 0) >= self.last_epoch:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def pbt_scheduler(spec: SchedulerSpec, mutations: dict[str, Any], *, time_attr: str,
                  last_epoch: int | None) -> EpochBoundedPBT:
    # PBT takes no seed of its own: its choices follow Python's `random`, which the search seeds
    return EpochBoundedPBT(last_epoch=last_epoch, time_attr=time_attr, perturbation_interval=spec.perturbation_interval,
                           hyperparam_mutations=mutations, quantile_fraction=spec.quantile_fraction,
                           resample_probability=spec.resample_probability, synch=spec.synchronous)


class ApplyTrialOptim(pl.Callback):
    """PBT resumes a trial from another trial's checkpoint, whose optimiser state carries the
    other trial's lr and weight decay; re-apply this trial's (possibly mutated) values. The
    checkpoint also names the other trial's best file as the best so far; forget it, so the
    trial tests a checkpoint of its own (it trains at least one more epoch, see `pbt_scheduler`)."""

    def __init__(self, optim: OptimConfig):
        self.optim = optim

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["initial_lr"] = self.optim.lr
                group["weight_decay"] = self.optim.weight_decay
                if "momentum" in group:
                    group["momentum"] = self.optim.momentum
        for config in trainer.lr_scheduler_configs:
            config.scheduler.base_lrs = [self.optim.lr] * len(config.scheduler.base_lrs)
        # typed as the Checkpoint base; stride's trainers keep a ModelCheckpoint (training.core)
        checkpoint = cast("ModelCheckpoint | None", trainer.checkpoint_callback)
        if checkpoint is not None and checkpoint.dirpath and checkpoint.best_model_path \
                and Path(checkpoint.best_model_path).parent != Path(checkpoint.dirpath):
            checkpoint.best_model_path, checkpoint.best_model_score = "", None
