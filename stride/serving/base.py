"""Serving: what a registered model of one task does around its exported network.

Training needs a task's datamodule, module, loss and figures (`stride.tasks`); everything after a
run (the exported program a model holds, evaluating it on a split, reading users' files as its input,
turning its outputs into rows, tables and pictures) is the task's `Serving`, registered under the
same name. The registry, `stride evaluate`, `stride predict` and the tracking publisher use only
this interface, so a layer below them never formats a command's output.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from torch import nn

from stride.errors import StrideError
from stride.plugins import registered
from stride.tasks import DataFacts

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pytorch_lightning as pl

    from stride.datamodules.sharded import ShardedDataModule

DEFAULT_MAX_PIXELS = 50_000_000  # `stride predict --max-pixels`: larger images are refused unread


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]  # without the batch dimension
    dtype: str = "float32"


@dataclass
class ExportedModel:
    """The network a registry serves (CPU, eval mode) and its input/output signature."""

    network: nn.Module
    inputs: TensorSpec  # a dimension of -1 takes any size (a fully convolutional network's H and W)
    outputs: TensorSpec
    example_shape: tuple[int, ...] | None = None  # the input example's shape where `inputs` has a -1


@dataclass
class Evaluation:
    """A logged model's numbers on one split; `details` is whatever the task's plots need."""

    split: str
    metrics: dict[str, float]  # keys start with the split, e.g. test_acc, test_loss
    samples: int
    dataset_path: str
    dataset_sha256: str
    details: dict[str, Any] = field(default_factory=dict)

    def value(self, quality: str) -> float:
        return self.metrics[f"{self.split}_{quality}"]

    def summary(self) -> str:
        shown = ", ".join(f"{k.removeprefix(self.split + '_')} {v:.4f}" for k, v in self.metrics.items()
                          if not k.endswith("_samples"))
        return f"{shown} on {self.samples} {self.split} samples"


class Serving(ABC):
    """One task's serving code; subclasses fill in the methods, instances are registered by the task's name."""

    task: ClassVar[str]
    # A run artifact, JSON {"words": [...]}, naming what the outputs mean, logged beside the model for tasks whose
    # labels can outgrow a registry tag (a captioner's vocabulary); `stride predict` reads it back.
    labels_artifact: ClassVar[str | None] = None

    @abstractmethod
    def export(self, module: pl.LightningModule, facts: DataFacts) -> ExportedModel:
        """The inference network that the MLflow model holds."""

    @abstractmethod
    def evaluate(self, network: nn.Module, data: ShardedDataModule, split: str, model: str) -> Evaluation:
        """Run an exported network over `split` of `data`."""

    @abstractmethod
    def evaluation_figures(self, evaluation: Evaluation, folder: Path, title: str) -> list[Path]:
        """PNG files to log with an evaluation."""

    def write_predictions(self, evaluation: Evaluation, folder: Path) -> list[Path]:
        """Per-sample prediction files in a format other tools read (`stride evaluate --predictions-dir`)."""
        raise StrideError(f"task {self.task!r} writes no per-sample prediction files")

    @abstractmethod
    def read_input(self, path: Path, inputs: TensorSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """One file as the exported network's input (raises StrideError naming the file). Images larger
        than `max_pixels` are refused from their header, before anything is decoded."""

    def run(self, network: nn.Module, inputs: list[np.ndarray]) -> Any:
        """The network's outputs for the files' inputs: one batch, unless a task's inputs differ in size."""
        import torch

        with torch.no_grad():
            return network(torch.from_numpy(np.stack(inputs))).numpy()

    @abstractmethod
    def predictions(self, outputs: np.ndarray, files: list[str], labels: list[str], top_k: int,
                    inputs: TensorSpec | None = None) -> list[Any]:
        """Rows with `as_dict()`, one per file, from the network's outputs (`inputs`: what `read_input` made
        of the files, for tasks that map outputs back to each file's own pixels)."""

    @abstractmethod
    def prediction_table(self, rows: list[Any]) -> str:
        """`stride predict`'s text output."""

    def draw_predictions(self, rows: list[Any], folder: Path) -> list[Path]:
        """Pictures of the predictions (`stride predict --out DIR`), for tasks that have something to draw."""
        raise StrideError(f"task {self.task!r} draws no predictions; leave out --out")

    def decoder(self, module: pl.LightningModule, **options: Any) -> nn.Module:
        """An eager inference network (CPU, eval) with options the logged model fixes, e.g. a captioner's
        beam size (`stride predict --beam-size`); it takes and returns what the logged model does."""
        raise StrideError(f"task {self.task!r} takes no decoding options ({', '.join(options)})")


_SERVING: dict[str, Serving] = {}


def register_serving(serving: Serving) -> Serving:
    if serving.task in _SERVING:
        raise ValueError(f"serving of task {serving.task!r} is registered twice")
    _SERVING[serving.task] = serving
    return serving


def get_serving(task: str) -> Serving:
    return registered(_SERVING, task,
                      lambda names: f"task {task!r} has no serving code registered (registered: {names})")
