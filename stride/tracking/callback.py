"""Per-epoch metrics to MLflow from global rank 0 only (no duplicates under DDP)."""

from __future__ import annotations

import math

import mlflow
import pytorch_lightning as pl


class MlflowEpochMetrics(pl.Callback):
    """Logs epoch-level train/val metrics with step=epoch and keeps them for the learning-curve plot."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id
        self.history: list[dict[str, float]] = []

    def _epoch_metrics(self, trainer: pl.Trainer, prefixes: tuple[str, ...]) -> dict[str, float]:
        metrics = {}
        for key, value in trainer.callback_metrics.items():
            name = key.removesuffix("_epoch")
            if key.endswith("_step") or not name.startswith(prefixes):
                continue
            number = float(value)
            if math.isfinite(number):
                metrics[name] = number
        return metrics

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = self._epoch_metrics(trainer, ("train_", "val_"))
        metrics["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        if self.run_id:
            mlflow.MlflowClient().log_batch(self.run_id, metrics=[
                mlflow.entities.Metric(k, v, int(mlflow.utils.time.get_current_time_millis()), trainer.current_epoch)
                for k, v in metrics.items()])
