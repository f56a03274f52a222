"""Classification of images, and of sequences (stored sequences, or images read pixel by pixel).

Both tasks share one LightningModule and one network recipe: the registered backbone with
the dataset's normalisation (and, for images read as sequences, the sequence view) folded
in front, so the exported model takes exactly what the dataset stores, scaled to [0, 1].
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import NonNegativeInt
from torch import nn

from stride.architectures import build
from stride.config.loading import config_to_dict
from stride.config.schema import DataConfig, Section, StrideConfig
from stride.datamodules.image_classification import ImageClassificationData
from stride.datamodules.manifest import read_manifest
from stride.datamodules.sequence_classification import SequenceClassificationData
from stride.datamodules.sharded import ShardedDataModule
from stride.errors import StrideError
from stride.lightning_modules.classification import ClassificationModule, classification_loss
from stride.lightning_modules.normalize import Normalize
from stride.lightning_modules.sequence_view import SequenceView
from stride.plots import plot_confusion_matrix, plot_learning_curves
from stride.tasks.base import DataFacts, Task, datamodule_arguments, register_task
from stride.tasks.cam import plot_test_split_cams

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pytorch_lightning as pl

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 256


class ShiftFlipAugment(Section):
    """Augmentation of stored, equally sized images, on the batch and on its device."""

    random_shift_px: NonNegativeInt = 0  # random translation by up to this many pixels (zero-filled)
    horizontal_flip: bool = False


class ClassificationDataOptions(DataConfig):
    augment: ShiftFlipAugment = ShiftFlipAugment()


class ClassificationConfig(StrideConfig):
    task: Literal["classification"] = "classification"
    data: ClassificationDataOptions


class SequenceDataOptions(ClassificationDataOptions):
    # over image shards: pixels as a sequence (docs/models.md, A2), in order or in one fixed permutation
    sequence_view: Literal["sequential", "permuted"] = "sequential"
    permutation_seed: int = 0  # the one fixed permutation of the permuted view


class SequenceClassificationConfig(StrideConfig):
    task: Literal["sequence_classification"] = "sequence_classification"
    data: SequenceDataOptions




def _datamodule_for(path: str | Path, **kwargs: Any) -> ShardedDataModule:
    """Sequence shards or image shards, whichever the manifest says the dataset holds."""
    if read_manifest(path).task == "sequence_classification":
        return SequenceClassificationData(path, **kwargs)
    return ImageClassificationData(path, **kwargs)


class ClassificationTask(Task):
    name = "classification"
    config_class: ClassVar[type[StrideConfig]] = ClassificationConfig
    dataset_tasks: ClassVar[tuple[str, ...]] = ("classification",)
    class_activation_maps: ClassVar[bool] = True  # a grid of test CAMs when the network's head has them

    # -- training ---------------------------------------------------------------------------
    def datamodule(self, config: StrideConfig, **overrides: Any) -> ShardedDataModule:
        data = config.data
        assert isinstance(data, ClassificationDataOptions)
        manifest_task = read_manifest(data.path).task
        if manifest_task not in self.dataset_tasks:
            raise StrideError(f"{data.path}: dataset task is {manifest_task!r}, but task {self.name!r} trains on "
                              f"{' or '.join(map(repr, self.dataset_tasks))} datasets; {fitting(manifest_task)}")
        kwargs = {**datamodule_arguments(config), **overrides}
        if manifest_task == "sequence_classification":
            return SequenceClassificationData(data.path, **kwargs)
        return ImageClassificationData(data.path, random_shift_px=data.augment.random_shift_px,
                                       horizontal_flip=data.augment.horizontal_flip, **kwargs)

    def network(self, config: StrideConfig, facts: DataFacts) -> nn.Module:
        """Normalisation (and the task's input view) folded in front of the backbone: the network
        takes what the dataset stores."""
        layers: list[nn.Module] = []
        if facts.normalization:
            layers.append(Normalize(list(facts.normalization[0]), list(facts.normalization[1])))
        view, input_shape = self.input_view(config, facts)
        layers += view
        backbone = build(config.model.architecture, input_shape=input_shape, num_classes=facts.num_classes,
                         **config.model.params)
        warn_if_receptive_field_short(config, backbone, input_shape[-1])
        return nn.Sequential(*layers, backbone)

    def input_view(self, config: StrideConfig, facts: DataFacts) -> tuple[list[nn.Module], tuple[int, ...]]:
        """Layers between normalisation and backbone, and the input shape the backbone then sees."""
        return [], facts.input_shape

    def module(self, config: StrideConfig, facts: DataFacts) -> ClassificationModule:
        description = {"config": config_to_dict(config), "data": facts.as_dict()}
        return ClassificationModule(self.network(config, facts), facts.num_classes, config.optim, config.schedule,
                                    description=description)

    def figures(self, module: pl.LightningModule, facts: DataFacts, history: list[dict[str, float]],
                folder: Path, title: str) -> list[Path]:
        assert isinstance(module, ClassificationModule)  # made by self.module
        made = []
        if history:
            made.append(plot_learning_curves(history, folder / "learning_curves.png"))
        if module.confusion_matrix is not None:
            made.append(plot_confusion_matrix(module.confusion_matrix.numpy(), list(facts.class_names),
                                              folder / "confusion_matrix_test.png", title=f"{title} test"))
        if self.class_activation_maps:
            made += plot_test_split_cams(module, self.evaluation_data, facts, folder, title)
        return made

    def batch_loss(self, network: nn.Module, batch: Any, forward: Any = None) -> torch.Tensor:
        inputs, labels = batch
        return classification_loss((forward or network)(inputs), labels)[1]  # GoogLeNet adds its auxiliary heads


    # -- the registry -----------------------------------------------------------------------
    def evaluation_data(self, path: str | Path, input_shape: tuple[int, ...] | None = None) -> ShardedDataModule:
        # samples are fed as stored: a model of another input shape is refused by the registry
        return _datamodule_for(path, batch_size=EVAL_BATCH_SIZE, num_workers=0, pin_memory=False)







class SequenceClassificationTask(ClassificationTask):
    """Sequences, stored as such or as images read pixel by pixel (sequential/permuted MNIST)."""

    name = "sequence_classification"
    config_class = SequenceClassificationConfig
    dataset_tasks = ("sequence_classification", "classification")
    class_activation_maps = False  # maps over pixels read as a sequence would not be an image's

    def datamodule(self, config: StrideConfig, **overrides: Any) -> ShardedDataModule:
        assert isinstance(config.data, SequenceDataOptions)
        if config.data.sequence_view == "permuted" and read_manifest(config.data.path).task == self.name:
            raise StrideError(f"data.sequence_view=permuted: {config.data.path} already holds sequences, whose "
                              "order stride does not permute; permute them when you write the .npz, or use "
                              "sequence_view: sequential")
        return super().datamodule(config, **overrides)

    def input_view(self, config: StrideConfig, facts: DataFacts) -> tuple[list[nn.Module], tuple[int, ...]]:
        if facts.manifest_task != "classification":
            return [], facts.input_shape
        assert isinstance(config.data, SequenceDataOptions)
        length = math.prod(facts.input_shape[1:])  # pixels as a sequence (docs/models.md, A2)
        seed = config.data.permutation_seed if config.data.sequence_view == "permuted" else None
        return [SequenceView(length, seed)], (facts.input_shape[0], length)


def fitting(manifest_task: str) -> str:
    """The recipes and architectures that do train on a dataset of this kind, for an error message."""
    from stride.architectures import names
    from stride.config.loading import load_raw, recipe_names
    from stride.tasks.base import get_task, task_names

    tasks = [t for t in task_names() if manifest_task in get_task(t).dataset_tasks]
    recipes = [r for r in recipe_names() if load_raw(r)[0].get("task", "classification") in tasks]
    architectures = sorted({a for t in tasks for a in names(t)})
    return (f"for it use task {' or '.join(tasks) or '(none)'}: recipes {', '.join(recipes) or '(none)'}; "
            f"architectures {', '.join(architectures) or '(none)'}")


def warn_if_receptive_field_short(config: StrideConfig, backbone: nn.Module, length: int) -> None:
    """A causal net whose receptive field (docs/models.md, eq. 62) is shorter than the sequence classifies
    from the last `receptive_field` steps only; that is legal but rarely intended."""
    field = getattr(backbone, "receptive_field", None)
    if field is not None and field < length:
        log.warning("%s: the receptive field of %s is %d steps but sequences have %d; the first %d steps cannot "
                    "influence the prediction (raise model.num_blocks, model.kernel_size or the dilations)",
                    config.name, config.model.architecture, field, length, length - field)




register_task(ClassificationTask())
register_task(SequenceClassificationTask())
