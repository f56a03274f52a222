"""One LightningModule for classification with any backbone from the registry."""

from __future__ import annotations

from typing import Any, Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from stride.architectures.outputs import AuxiliaryLogits
from stride.config.schema import OptimConfig, ScheduleConfig
from stride.lightning_modules.schedules import lr_multiplier


def build_optimizer(parameters: Any, optim: OptimConfig) -> torch.optim.Optimizer:
    if optim.name == "adamw":
        return torch.optim.AdamW(parameters, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    return torch.optim.SGD(parameters, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov,
                           weight_decay=optim.weight_decay)


def classification_loss(output: torch.Tensor | AuxiliaryLogits,
                        labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, cross-entropy); a network training auxiliary heads (GoogLeNet) adds their weighted losses."""
    if isinstance(output, AuxiliaryLogits):
        auxiliary = sum(F.cross_entropy(logits, labels) for logits in output.auxiliary)
        return output.logits, F.cross_entropy(output.logits, labels) + output.auxiliary_weight * auxiliary
    return output, F.cross_entropy(output, labels)


def scheduled_optimizer(parameters: Any, optim: OptimConfig, schedule: ScheduleConfig,
                        trainer: pl.Trainer) -> dict[str, Any]:
    """What every stride module's `configure_optimizers` returns: the optimiser and its per-step schedule."""
    optimizer = build_optimizer(parameters, optim)
    total_steps = max(1, int(trainer.estimated_stepping_batches))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(schedule, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}


class StrideModule(pl.LightningModule):
    """What every stride LightningModule shares: one `_step(batch, split)` for train, val and test;
    `_eval_epoch_start(split)` / `_eval_epoch_end(split)` around val and test epochs; and the optimiser
    with its schedule over the trainable parameters (a frozen encoder is left out)."""

    optim: OptimConfig
    schedule: ScheduleConfig

    def _step(self, batch: Any, split: str) -> torch.Tensor:
        raise NotImplementedError

    def _eval_epoch_start(self, split: str) -> None:
        pass

    def _eval_epoch_end(self, split: str) -> None:
        pass

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._eval_epoch_start("val")

    def on_test_epoch_start(self) -> None:
        self._eval_epoch_start("test")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.parameters() if p.requires_grad]
        return scheduled_optimizer(trainable, self.optim, self.schedule, self.trainer)


class ClassificationModule(StrideModule):
    """Cross-entropy on logits; accuracy and loss per split; confusion matrix on test.

    `network` maps inputs to logits (normalisation already folded in), so it is exactly
    what gets exported for inference.
    """

    def __init__(self, network: nn.Module, num_classes: int, optim: OptimConfig, schedule: ScheduleConfig,
                 description: dict[str, Any] | None = None):
        super().__init__()
        if description is not None:  # plain data only: checkpoints stay loadable with weights_only=True
            self.save_hyperparameters({"stride": description}, logger=False)
        self.network = network
        self.num_classes = num_classes
        self.optim = optim
        self.schedule = schedule
        # validate_args=False: the checks call torch.unique on the labels, a GPU sync every step
        metric = lambda: torchmetrics.Accuracy(task="multiclass", num_classes=num_classes,  # noqa: E731
                                               validate_args=False)
        self.accuracy = nn.ModuleDict({f"{split}_split": metric() for split in ("train", "val", "test")})
        self.test_confusion = torchmetrics.ConfusionMatrix(task="multiclass", num_classes=num_classes,
                                                           validate_args=False)
        self.confusion_matrix: torch.Tensor | None = None  # set after testing
        self.compiled_forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # see training.speed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.compiled_forward or self.network)(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        inputs, labels = batch
        logits, loss = classification_loss(self(inputs), labels)
        accuracy = self.accuracy[f"{split}_split"]
        accuracy.update(logits, labels)  # accumulated on the device; computed once per epoch
        # epoch means over each split; while training also the step loss, which stays on the device
        # until the progress bar or logger reads it (every trainer.log_every_n_steps), never once per step
        self.log(f"{split}_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(labels))
        if split == "train":
            self.log("train_loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log(f"{split}_acc", accuracy, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        if split == "test":
            self.test_confusion.update(logits, labels)
        return loss

    def _eval_epoch_end(self, split: str) -> None:
        if split != "test":
            return
        self.confusion_matrix = self.test_confusion.compute().cpu()  # all ranks' samples, each once
        self.test_confusion.reset()
        self.log("test_samples", float(self.confusion_matrix.sum()))
