"""Which datamodule and LightningModule serve each task; the one place a task is wired."""

from __future__ import annotations

from typing import Any

from torch import nn

from stride.architectures import build
from stride.config.schema import StrideConfig
from stride.datamodules.image_classification import ImageClassificationData, ShardedDataModule
from stride.lightning_modules.classification import ClassificationModule
from stride.lightning_modules.normalize import Normalize


def build_datamodule(config: StrideConfig, **overrides: Any) -> ShardedDataModule:
    data = config.data
    kwargs: dict[str, Any] = dict(batch_size=data.batch_size, eval_batch_size=data.eval_batch_size,
                                  num_workers=data.num_workers, shuffle_buffer=data.shuffle_buffer,
                                  pin_memory=data.pin_memory, seed=config.trainer.seed)
    kwargs.update(overrides)
    if config.task == "classification":
        return ImageClassificationData(data.path, random_shift_px=data.augment.random_shift_px,
                                       horizontal_flip=data.augment.horizontal_flip, normalize=data.normalize,
                                       **kwargs)
    raise ValueError(f"no datamodule for task {config.task!r}")


def build_network(config: StrideConfig, datamodule: ShardedDataModule) -> nn.Module:
    """The registry's backbone with the dataset's normalisation folded in front."""
    backbone = build(config.model.architecture, input_shape=datamodule.input_shape,
                     num_classes=datamodule.num_classes, **config.model.params)
    normalization = datamodule.normalization
    return nn.Sequential(Normalize(*normalization), backbone) if normalization else nn.Sequential(backbone)


def build_module(config: StrideConfig, datamodule: ShardedDataModule) -> ClassificationModule:
    if config.task == "classification":
        return ClassificationModule(build_network(config, datamodule), datamodule.num_classes, config.optim,
                                    config.schedule)
    raise ValueError(f"no LightningModule for task {config.task!r}")
