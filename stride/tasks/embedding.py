"""Metric learning and face verification as a stride task (docs/embedding.md).

A network maps an image to a unit-length embedding; images of one identity should lie closer than a
threshold, images of two farther. Models are compared on verification accuracy by the LFW protocol
(`val_verification_acc`, mean over 10 folds); TAR at a fixed FAR, identification top-1 and a ROC curve are
reported beside it. The network is `embedding_net`: any registered image classifier as its backbone, a
linear projection and L2 normalisation (FaceNet, Schroff et al. 2015, sec. 3); the loss is the `loss:`
section's (triplet with batch-hard or semi-hard mining, contrastive, or a verification head).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from stride.architectures import build, get, register, validate_params
from stride.config.loading import config_to_dict
from stride.config.schema import DataConfig, Section, StrideConfig
from stride.datamodules.embedding import EmbeddingData
from stride.errors import StrideError
from stride.lightning_modules.embedding import EmbeddingModule, EmbeddingNetwork, LossSettings, triplet_loss
from stride.lightning_modules.normalize import Normalize
from stride.plots import plot_learning_curves
from stride.tasks.base import DataFacts, Task, checked_datamodule_arguments, register_task
from stride.tasks.classification import ShiftFlipAugment

EVAL_BATCH_SIZE = 256
PREPARED_BY = "stride data prepare digits-heldout, lfw or identity-folders"
CURVES = ("loss", "verification_acc", "top1")  # the learning-curve panels; the other numbers are logged as metrics


class EmbeddingDataOptions(DataConfig):
    augment: ShiftFlipAugment = ShiftFlipAugment()
    # K of a P x K batch: P = batch_size / K identities, K images each (FaceNet sec. 3.2 draws ~40 per identity)
    images_per_identity: int = Field(4, ge=2)


class LossOptions(Section):
    name: Literal["triplet", "contrastive", "verification_head"] = "triplet"
    margin: PositiveFloat | None = None  # triplet: alpha, default 0.2; contrastive: m, default 1.0
    mining: Literal["batch_hard", "semi_hard"] = "batch_hard"  # triplet only


class EmbeddingConfig(StrideConfig):
    task: Literal["embedding"] = "embedding"
    data: EmbeddingDataOptions
    loss: LossOptions = LossOptions()


@register("embedding_net", task="embedding")
def build_embedding_net(*, input_shape: tuple[int, ...], num_classes: int, backbone: str = "digits_cnn",
                        backbone_params: dict[str, Any] | None = None, backbone_features: PositiveInt = 128,
                        embedding_dim: PositiveInt = 64) -> nn.Module:
    """Any registered image classifier (its output layer `backbone_features` wide), a linear projection to
    `embedding_dim` and unit length (FaceNet sec. 3). `num_classes` (the training identities) is not used:
    an embedding serves identities it never saw."""
    if get(backbone).task != "classification":
        raise StrideError(f"model.backbone {backbone!r} is a {get(backbone).task} network; the backbone of an "
                          "embedding is an image classifier (stride recipes lists them)")
    params = validate_params(backbone, backbone_params or {}, where="model.backbone_params")
    return EmbeddingNetwork(build(backbone, input_shape=input_shape, num_classes=backbone_features, **params),
                            backbone_features, embedding_dim)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "") -> Path:
    """TAR against FAR (log scale from the smallest non-zero FAR) of each named curve."""
    import matplotlib.pyplot as plt  # the Agg backend: stride.plots chose it when imported

    fig, axis = plt.subplots(figsize=(5, 4))
    for name, (far, tar) in curves.items():
        area = float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))
        shown = far > 0
        axis.step(far[shown], tar[shown], where="post", label=f"{name} (AUC {area:.4f})")
    axis.set_xscale("log")
    axis.set_xlabel("false accept rate")
    axis.set_ylabel("true accept rate")
    axis.set_title(f"{title} ROC".strip())
    axis.grid(alpha=0.3, which="both")
    axis.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class EmbeddingTask(Task):
    name = "embedding"
    config_class: ClassVar[type[StrideConfig]] = EmbeddingConfig
    dataset_tasks: ClassVar[tuple[str, ...]] = ("embedding",)
    quality = "verification_acc"
    quality_mode = "max"
    reported = ("verification_acc_std", "tar_at_far_1e-02", "top1", "loss")

    def datamodule(self, config: StrideConfig, **overrides: Any) -> EmbeddingData:
        data = config.data
        assert isinstance(data, EmbeddingDataOptions)
        if data.cache != "none":
            raise StrideError(f"data.cache={data.cache}: embedding batches are P identities x K images grouped from "
                              "the shard stream (docs/embedding.md); set data.cache: none")
        kwargs = checked_datamodule_arguments(self, config, PREPARED_BY, **overrides)
        return EmbeddingData(data.path, images_per_identity=data.images_per_identity,
                             random_shift_px=data.augment.random_shift_px,
                             horizontal_flip=data.augment.horizontal_flip, **kwargs)

    def network(self, config: StrideConfig, facts: DataFacts) -> nn.Module:
        """The registry's embedding network with the data's normalisation folded in front: it takes [0, 1] pixels."""
        network = build(config.model.architecture, input_shape=facts.input_shape, num_classes=facts.num_classes,
                        **config.model.params)
        if not facts.normalization:
            return network
        return nn.Sequential(Normalize(list(facts.normalization[0]), list(facts.normalization[1])), network)

    def module(self, config: StrideConfig, facts: DataFacts) -> EmbeddingModule:
        assert isinstance(config, EmbeddingConfig)
        network = self.network(config, facts)
        loss = LossSettings(config.loss.name, config.loss.margin, config.loss.mining)
        description = {"config": config_to_dict(config), "data": facts.as_dict()}
        return EmbeddingModule(network, embedding_width(network, facts.input_shape), loss, config.optim,
                               config.schedule, description=description)

    def figures(self, module: Any, facts: DataFacts, history: list[dict[str, float]], folder: Path,
                title: str) -> list[Path]:
        assert isinstance(module, EmbeddingModule)  # made by self.module
        made = [plot_learning_curves(history, folder / "learning_curves.png", CURVES)] if history else []
        if module.last_test_report is not None:
            made.append(plot_roc({"test pairs": module.last_test_report.roc}, folder / "roc_test.png", title))
        return made

    def batch_loss(self, network: nn.Module, batch: Any, forward: Any = None) -> torch.Tensor:
        """Triplet loss with batch-hard mining (`stride bench` times one loss; the head's lives in the module)."""
        images, labels, _ = batch
        return triplet_loss((forward or network)(images), labels)[0]

    def evaluation_data(self, path: str | Path, input_shape: tuple[int, ...] | None = None) -> EmbeddingData:
        return EmbeddingData(path, batch_size=EVAL_BATCH_SIZE, num_workers=0, pin_memory=False)


@torch.no_grad()
def embedding_width(network: nn.Module, input_shape: tuple[int, ...]) -> int:
    """How many numbers the network embeds an image in (whatever registered architecture built it)."""
    was_training = network.training
    network.eval()
    try:
        return int(network(torch.zeros(2, *input_shape)).shape[1])
    finally:
        network.train(was_training)


register_task(EmbeddingTask())
