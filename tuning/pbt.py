"""Population-based training support: make mutated optimiser values take effect."""

from __future__ import annotations

import pytorch_lightning as pl

from stride.config.schema import OptimConfig


class ApplyTrialOptim(pl.Callback):
    """PBT resumes a trial from another trial's checkpoint, whose optimiser state carries the
    other trial's lr and weight decay; re-apply this trial's (possibly mutated) values."""

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
