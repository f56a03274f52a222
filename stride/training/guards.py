"""Stopping a run whose loss is no longer a number, before it logs a model that predicts garbage."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from stride.errors import StrideError


class NonFiniteLossGuard(pl.Callback):
    """Raises once the training loss has been NaN or infinite.

    The check accumulates on the device and is read back only every `check_every_n_steps`
    steps (the progress bar's refresh) and at the end of each epoch, so it costs no extra
    GPU synchronisation per step.
    """

    def __init__(self, check_every_n_steps: int):
        self.check_every_n_steps = max(1, check_every_n_steps)
        self._seen_bad: torch.Tensor | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        bad = ~torch.isfinite(loss.detach()).all()
        self._seen_bad = bad if self._seen_bad is None else self._seen_bad | bad
        if trainer.global_step % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        if self._seen_bad is not None and bool(self._seen_bad):
            raise StrideError(f"training diverged: the loss became NaN or infinite by epoch {trainer.current_epoch}, "
                              f"step {trainer.global_step}; lower optim.lr, add schedule.warmup or set "
                              "trainer.gradient_clip_val")
