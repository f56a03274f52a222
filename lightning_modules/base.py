"""What every stride LightningModule shares: construction, the optimiser and its schedule, one `_step` for the
three splits, and per-epoch means kept on the device.

Lightning's `self.log` costs about a millisecond of Python per call (its result collection moves and
detaches every logged object), which a GPU step of a small network does not have: logged every step it
held stride's training path to 0.46-0.73 of a bare loop on an H200 (docs/benchmarks.md). So losses are
summed on the device (`log_mean`) and logged once per epoch, over all ranks; the step loss for the
progress bar only on the steps a logger would record it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from stride.config.schema import OptimConfig, ScheduleConfig
from stride.lightning_modules.schedules import lr_multiplier


def build_optimizer(parameters: Any, optim: OptimConfig) -> torch.optim.Optimizer:
    if optim.name == "adamw":
        return torch.optim.AdamW(parameters, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    return torch.optim.SGD(parameters, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov,
                           weight_decay=optim.weight_decay)


def scheduled_optimizer(parameters: Any, optim: OptimConfig, schedule: ScheduleConfig,
                        trainer: pl.Trainer) -> dict[str, Any]:
    """What every stride module's `configure_optimizers` returns: the optimiser and its per-step schedule."""
    optimizer = build_optimizer(parameters, optim)
    total_steps = max(1, int(trainer.estimated_stepping_batches))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(schedule, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}


class StrideModule(pl.LightningModule):
    """A `network` trained with `optim` and `schedule`. Subclasses write `_step(batch, split)` and, for
    numbers other than means (accuracy, AP, CIDEr), `_log_epoch(split)` and `_eval_epoch_start(split)`."""

    def __init__(self, network: nn.Module, optim: OptimConfig, schedule: ScheduleConfig,
                 description: dict[str, Any] | None = None):
        super().__init__()
        if description is not None:  # plain data only: checkpoints stay loadable with weights_only=True
            self.save_hyperparameters({"stride": description}, logger=False)
        self.network = network
        self.optim = optim
        self.schedule = schedule
        self.compiled_forward: Callable[..., Any] | None = None  # the compiled network.forward (training.speed)
        self._sums: dict[str, tuple[Tensor, Tensor]] = {}  # name -> (weighted sum, weight), this rank's
        self._train_epoch_logged = False

    def forward(self, *inputs: Tensor) -> Any:
        return (self.compiled_forward or self.network)(*inputs)

    def _step(self, batch: Any, split: str) -> Tensor:
        raise NotImplementedError

    def _log_epoch(self, split: str) -> None:
        """Log the split's other epoch numbers (all ranks' samples)."""

    def _eval_epoch_start(self, split: str) -> None:
        pass

    # -- epoch means on the device ------------------------------------------------------------------
    def log_mean(self, name: str, value: Tensor, weight: int | Tensor) -> None:
        """Add `value` (a batch mean over `weight` items) to the epoch's mean of `name`; no device sync."""
        value = value.detach().float()
        weighted = value * weight
        weight = torch.as_tensor(weight, dtype=torch.float32, device=value.device)
        if name in self._sums:
            total, count = self._sums[name]
            weighted, weight = total + weighted, count + weight
        self._sums[name] = (weighted, weight)

    def log_step_loss(self, loss: Tensor) -> None:
        """The training loss for the progress bar and the loggers, on the steps they read it."""
        # Lightning's logger connector sets `log_every_n_steps` on the trainer, which does not declare it
        if (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0:  # type: ignore[attr-defined]
            self.log("train_loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)

    def all_gather_tensor(self, tensor: Tensor) -> Tensor:
        """`all_gather` of one tensor, which gives one tensor (Lightning types the result as any collection)."""
        return cast(Tensor, self.all_gather(tensor))

    def _log_means(self, split: str) -> None:
        names = sorted(name for name in self._sums if name.startswith(f"{split}_"))
        if not names:
            return
        # one reduction over all ranks for every mean of the split: sums and weights side by side
        stacked = torch.stack([torch.stack(self._sums.pop(name)) for name in names])
        totals = self.trainer.strategy.reduce(stacked, reduce_op="sum")
        for name, (total, count) in zip(names, totals):
            self.log(name, total / count.clamp_min(1), on_step=False, on_epoch=True, batch_size=1,
                     prog_bar=name == "val_loss")

    def _end_epoch(self, split: str) -> None:
        self._log_means(split)
        self._log_epoch(split)

    # -- Lightning's hooks ----------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # the epoch's train numbers are logged with its last batch: the callbacks' `on_train_epoch_end` (the
        # epoch history, the MLflow recorder) run before the module's and must see them
        trainer = self.trainer
        if batch_idx + 1 >= trainer.num_training_batches or 0 < trainer.max_steps <= trainer.global_step:
            self._end_epoch("train")
            self._train_epoch_logged = True

    def on_train_epoch_start(self) -> None:
        self._train_epoch_logged = False

    def on_train_epoch_end(self) -> None:
        if not self._train_epoch_logged:  # a loader of unknown length: late, but logged
            self._end_epoch("train")

    def on_validation_epoch_start(self) -> None:
        self._eval_epoch_start("val")

    def on_test_epoch_start(self) -> None:
        self._eval_epoch_start("test")

    def on_validation_epoch_end(self) -> None:
        self._end_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_epoch("test")

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.parameters() if p.requires_grad]
        return scheduled_optimizer(trainable, self.optim, self.schedule, self.trainer)
