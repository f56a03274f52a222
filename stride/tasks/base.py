"""What a task is for training, in one place: the interface every launcher and the training core use.

A task says which config it takes (its own data options), which datamodule reads its datasets,
which LightningModule trains it, which metric says one model is better than another, and which
plots a finished run gets. What happens after training (export, evaluation, users' files,
predictions) is the task's `stride.serving.Serving`. A new task is a module here and one in
`stride/serving/` (or a plugin, stride.plugins), with no edit to the commands that use them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from torch import nn

from stride.errors import StrideError
from stride.plugins import registered

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pytorch_lightning as pl
    import torch

    from stride.config.schema import StrideConfig
    from stride.datamodules.sharded import ShardedDataModule


@dataclass(frozen=True)
class DataFacts:
    """What a network needs to know about its dataset, so a checkpoint can rebuild it without the data."""

    manifest_task: str
    input_shape: tuple[int, ...]  # one stored sample, without the batch dimension
    num_classes: int
    class_names: tuple[str, ...] = ()
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # per-channel (mean, std)

    @classmethod
    def of(cls, datamodule: ShardedDataModule) -> DataFacts:
        norm = datamodule.normalization
        return cls(datamodule.manifest.task, tuple(datamodule.input_shape), datamodule.num_classes,
                   tuple(datamodule.class_names),
                   (tuple(norm[0]), tuple(norm[1])) if norm else None)

    def as_dict(self) -> dict[str, Any]:
        return {"manifest_task": self.manifest_task, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "class_names": list(self.class_names),
                "normalization": [list(self.normalization[0]), list(self.normalization[1])]
                if self.normalization else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataFacts:
        norm = data.get("normalization")
        return cls(data["manifest_task"], tuple(data["input_shape"]), int(data["num_classes"]),
                   tuple(data.get("class_names", ())), (tuple(norm[0]), tuple(norm[1])) if norm else None)


class Task(ABC):
    """One kind of problem. Subclasses fill in the methods; instances are registered by name."""

    name: ClassVar[str]
    # the config this task trains from: a StrideConfig subclass whose `data` holds the task's own options
    config_class: ClassVar[type[StrideConfig]]
    # the manifest tasks (dataset kinds) this task can train on
    dataset_tasks: ClassVar[tuple[str, ...]]
    # which model is better: `val_<quality>` while training, `<split>_<quality>` when evaluating
    quality: ClassVar[str] = "acc"
    quality_mode: ClassVar[Literal["min", "max"]] = "max"
    # the test metrics a leaderboard or report shows beside `test_<quality>`
    reported: ClassVar[tuple[str, ...]] = ("loss",)

    @property
    def shown_test_metrics(self) -> tuple[str, ...]:
        return tuple(f"test_{name}" for name in (self.quality, *self.reported))

    # -- training ---------------------------------------------------------------------------
    @abstractmethod
    def datamodule(self, config: StrideConfig, **overrides: Any) -> ShardedDataModule:
        """The datamodule reading `config.data.path` (checks its manifest, not yet its shards)."""

    @abstractmethod
    def module(self, config: StrideConfig, facts: DataFacts) -> pl.LightningModule:
        """A fresh LightningModule; it records `config` and `facts` so its checkpoints rebuild it."""

    @abstractmethod
    def figures(self, module: pl.LightningModule, facts: DataFacts, history: list[dict[str, float]],
                folder: Path, title: str) -> list[Path]:
        """PNG files to log with a finished run (after testing the best checkpoint)."""

    @abstractmethod
    def batch_loss(self, network: nn.Module, batch: Any, forward: Any = None) -> torch.Tensor:
        """The training loss of one batch as the datamodule hands it to the module (on the device), computed
        as the task's module computes it: for loops outside Lightning (`stride bench`'s bare loop).
        `forward`: what to call instead of `network` (its compiled forward)."""

    @abstractmethod
    def evaluation_data(self, path: str | Path, input_shape: tuple[int, ...] | None = None) -> ShardedDataModule:
        """A datamodule that reads a dataset for evaluation, every sample once; `input_shape` is the model's,
        for tasks that resize stored images to what the network takes (detection, captioning)."""


def datamodule_arguments(config: StrideConfig) -> dict[str, Any]:
    """The `data` options every task's datamodule takes the same way."""
    from stride.datamodules.workers import loader_workers

    data = config.data
    return dict(batch_size=data.batch_size, eval_batch_size=data.eval_batch_size,
                num_workers=loader_workers(data.num_workers),
                shuffle_buffer=data.shuffle_buffer, pin_memory=data.pin_memory, seed=config.trainer.seed,
                normalize=data.normalize, cache=data.cache,
                cache_budget_bytes=data.cache_budget_mb and data.cache_budget_mb * 2**20)


def checked_datamodule_arguments(task: Task, config: StrideConfig, prepare_with: str,
                                 **overrides: Any) -> dict[str, Any]:
    """The datamodule arguments of a task over stored images (detection, captioning), after refusing a dataset
    of another kind (`prepare_with` says which commands make one)."""
    from stride.datamodules.manifest import read_manifest

    manifest_task = read_manifest(config.data.path).task
    if manifest_task not in task.dataset_tasks:
        raise StrideError(f"{config.data.path}: dataset task is {manifest_task!r}, but task {task.name!r} trains on "
                          f"datasets made by {prepare_with}")
    return {**datamodule_arguments(config), **overrides}


def network_taking_pixels(config: StrideConfig, facts: DataFacts) -> nn.Module:
    """The registry's network with the data's normalisation folded in, so the logged model takes [0, 1] pixels."""
    from stride.architectures import build
    from stride.lightning_modules.normalize import Normalize

    network = build(config.model.architecture, input_shape=facts.input_shape, num_classes=facts.num_classes,
                    **config.model.params)
    if facts.normalization:
        network.normalize = Normalize(list(facts.normalization[0]), list(facts.normalization[1]))
    return network


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make `task` (and its config) known by name; its module calls this when imported."""
    from stride.config.task_configs import TaskConfig, register_task_config

    if task.name in _TASKS:
        raise ValueError(f"task {task.name!r} is registered twice")
    if task.config_class.model_fields["task"].default != task.name:
        raise ValueError(f"task {task.name!r}: its config_class's `task` defaults to "
                         f"{task.config_class.model_fields['task'].default!r}")
    _TASKS[task.name] = task
    register_task_config(TaskConfig(task.name, task.config_class, f"val_{task.quality}", task.quality_mode))
    return task


def task_names() -> list[str]:
    from stride.plugins import discover

    discover()
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    return registered(_TASKS, name, lambda names: f"unknown task {name!r}; registered tasks: {names}")
