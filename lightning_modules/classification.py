"""One LightningModule for classification with any backbone from the registry."""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from stride.architectures.outputs import AuxiliaryLogits
from stride.config.schema import OptimConfig, ScheduleConfig
from stride.lightning_modules.base import StrideModule


def classification_loss(output: torch.Tensor | AuxiliaryLogits,
                        labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, cross-entropy); a network training auxiliary heads (GoogLeNet) adds their weighted losses."""
    if isinstance(output, AuxiliaryLogits):
        auxiliary = sum(F.cross_entropy(logits, labels) for logits in output.auxiliary)
        return output.logits, F.cross_entropy(output.logits, labels) + output.auxiliary_weight * auxiliary
    return output, F.cross_entropy(output, labels)


class ClassificationModule(StrideModule):
    """Cross-entropy on logits; accuracy and loss per split; confusion matrix on test.

    `network` maps inputs to logits (normalisation already folded in), so it is exactly
    what gets exported for inference.
    """

    def __init__(self, network: nn.Module, num_classes: int, optim: OptimConfig, schedule: ScheduleConfig,
                 description: dict[str, Any] | None = None):
        super().__init__(network, optim, schedule, description)
        self.num_classes = num_classes
        # validate_args=False: the checks call torch.unique on the labels, a GPU sync every step
        metric = lambda: torchmetrics.Accuracy(task="multiclass", num_classes=num_classes,  # noqa: E731
                                               validate_args=False)
        self.accuracy = nn.ModuleDict({f"{split}_split": metric() for split in ("train", "val", "test")})
        self.test_confusion = torchmetrics.ConfusionMatrix(task="multiclass", num_classes=num_classes,
                                                           validate_args=False)
        self.confusion_matrix: torch.Tensor | None = None  # set after testing

    def _accuracy(self, split: str) -> torchmetrics.Metric:
        return cast(torchmetrics.Metric, self.accuracy[f"{split}_split"])  # ModuleDict types its values as Module

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        inputs, labels = batch
        logits, loss = classification_loss(self(inputs), labels)
        self._accuracy(split).update(logits, labels)  # accumulated on the device
        self.log_mean(f"{split}_loss", loss, len(labels))
        if split == "train":
            self.log_step_loss(loss)
        if split == "test":
            self.test_confusion.update(logits, labels)
        return loss

    def _log_epoch(self, split: str) -> None:
        accuracy = self._accuracy(split)
        self.log(f"{split}_acc", accuracy.compute(), on_step=False, on_epoch=True, prog_bar=True, batch_size=1)
        accuracy.reset()
        if split != "test":
            return
        self.confusion_matrix = self.test_confusion.compute().cpu()  # all ranks' samples, each once
        self.test_confusion.reset()
        self.log("test_samples", float(self.confusion_matrix.sum()))
