"""Per-epoch metrics and a resumable checkpoint from Lightning to Ray (Tune or Train)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import mlflow
import pytorch_lightning as pl

from stride.tracking.callback import MlflowEpochMetrics

CHECKPOINT_FILE = "checkpoint.ckpt"
RUN_ID_KEY = "stride_run_id"

# report(metrics, checkpoint_dir or None); every rank calls it, only rank 0 passes a checkpoint
Report = Callable[[dict[str, Any], "str | None"], None]


def epoch_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """Epoch-level train_*/val_* numbers, selected exactly as the MLflow epoch logging does."""
    return MlflowEpochMetrics(run_id=None)._epoch_metrics(trainer, ("train_", "val_"))


class ReportEpochs(pl.Callback):
    """After each epoch's validation: save the full trainer state and report it with the metrics.

    Runs after stride's MLflow epoch logging, so a trial that the scheduler stops inside
    `report` has already recorded the epoch. The child run id travels with the metrics so
    the driver can find the run of the best trial.
    """

    def __init__(self, report: Report):
        self.report = report

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics: dict[str, Any] = {**epoch_metrics(trainer), "epoch": trainer.current_epoch + 1}
        active = mlflow.active_run()
        if trainer.is_global_zero and active is not None:
            metrics[RUN_ID_KEY] = active.info.run_id
        folder = Path(tempfile.mkdtemp(prefix="stride-report-"))
        try:
            # The full training state (weights, optimiser, loops) so a restarted trial resumes exactly;
            # it is read back only by `trainer.fit(ckpt_path=..., weights_only=True)` in train.py, which
            # refuses anything but tensors and plain containers. Collective under DDP; rank 0 writes.
            trainer.save_checkpoint(folder / CHECKPOINT_FILE)
            self.report(metrics, str(folder) if trainer.is_global_zero else None)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
