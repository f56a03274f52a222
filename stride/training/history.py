"""Epoch-level numbers of a fit, kept in memory for the learning curves and the caller."""

from __future__ import annotations

import math

import pytorch_lightning as pl


def epoch_metrics(trainer: pl.Trainer, prefixes: tuple[str, ...] = ("train_", "val_")) -> dict[str, float]:
    """The finite epoch-level train_*/val_* values Lightning holds now (per-step values left out)."""
    metrics = {}
    for key, value in trainer.callback_metrics.items():
        name = key.removesuffix("_epoch")
        if key.endswith("_step") or not name.startswith(prefixes):
            continue
        number = float(value)
        if math.isfinite(number):
            metrics[name] = number
    return metrics


class EpochHistory(pl.Callback):
    """One row per finished training epoch: its train/val metrics and the learning rate."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch, **epoch_metrics(trainer)}
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.history.append(row)
