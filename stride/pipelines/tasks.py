"""Which datamodule and LightningModule serve each task; the one place a task is wired."""

from __future__ import annotations

import logging
import math
from typing import Any

from torch import nn

from stride.architectures import build
from stride.config.schema import StrideConfig
from stride.datamodules.image_classification import ImageClassificationData, ShardedDataModule
from stride.datamodules.manifest import read_manifest
from stride.datamodules.sequence_classification import SequenceClassificationData
from stride.lightning_modules.classification import ClassificationModule
from stride.lightning_modules.normalize import Normalize
from stride.lightning_modules.sequence_view import SequenceView

log = logging.getLogger(__name__)


def build_datamodule(config: StrideConfig, **overrides: Any) -> ShardedDataModule:
    data = config.data
    kwargs: dict[str, Any] = dict(batch_size=data.batch_size, eval_batch_size=data.eval_batch_size,
                                  num_workers=data.num_workers, shuffle_buffer=data.shuffle_buffer,
                                  pin_memory=data.pin_memory, seed=config.trainer.seed, normalize=data.normalize)
    kwargs.update(overrides)
    if config.task == "sequence_classification" and read_manifest(data.path).task == "sequence_classification":
        return SequenceClassificationData(data.path, **kwargs)
    return ImageClassificationData(data.path, random_shift_px=data.augment.random_shift_px,
                                   horizontal_flip=data.augment.horizontal_flip, **kwargs)


def images_as_sequences(config: StrideConfig, datamodule: ShardedDataModule) -> bool:
    return config.task == "sequence_classification" and isinstance(datamodule, ImageClassificationData)


def backbone_input_shape(config: StrideConfig, datamodule: ShardedDataModule) -> tuple[int, ...]:
    shape = datamodule.input_shape
    if images_as_sequences(config, datamodule):
        return (shape[0], math.prod(shape[1:]))
    return shape


def build_network(config: StrideConfig, datamodule: ShardedDataModule) -> nn.Module:
    """Normalisation and, for images read as sequences, the sequence view, folded in front of the backbone.

    The result takes exactly what the dataset stores (scaled to [0, 1] for images), so the
    logged model needs no separate preprocessing.
    """
    layers: list[nn.Module] = []
    if datamodule.normalization:
        layers.append(Normalize(*datamodule.normalization))
    if images_as_sequences(config, datamodule):
        length = backbone_input_shape(config, datamodule)[1]
        seed = config.data.permutation_seed if config.data.sequence_view == "permuted" else None
        layers.append(SequenceView(length, seed))
    input_shape = backbone_input_shape(config, datamodule)
    backbone = build(config.model.architecture, input_shape=input_shape, num_classes=datamodule.num_classes,
                     **config.model.params)
    warn_if_receptive_field_short(config, backbone, input_shape[-1])
    layers.append(backbone)
    return nn.Sequential(*layers)


def warn_if_receptive_field_short(config: StrideConfig, backbone: nn.Module, length: int) -> None:
    """A causal net whose receptive field (MODELS.md eq. 62) is shorter than the sequence classifies
    from the last `receptive_field` steps only; that is legal but rarely intended."""
    field = getattr(backbone, "receptive_field", None)
    if config.task == "sequence_classification" and field is not None and field < length:
        log.warning("%s: the receptive field of %s is %d steps but sequences have %d; the first %d steps cannot "
                    "influence the prediction (raise model.num_blocks, model.kernel_size or the dilations)",
                    config.name, config.model.architecture, field, length, length - field)


def build_module(config: StrideConfig, datamodule: ShardedDataModule) -> ClassificationModule:
    """Image and sequence classification share one module: the network outputs logits either way."""
    return ClassificationModule(build_network(config, datamodule), datamodule.num_classes, config.optim,
                                config.schedule)
