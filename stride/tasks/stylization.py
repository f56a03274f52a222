"""Fast neural style transfer as a stride task (docs/stylization.md; dissertation sec. 5.4-5.5, Table 5.1).

A pastiche network (`pastiche_net`) learns to stylise content images in the style(s) of its dataset, one
conditional instance normalisation pair per style, trained with the perceptual loss of eq. 5.10 over a
frozen loss network (the `loss:` section). Models are compared on `val_style_ratio` (lower: more of the
style), measured with a fixed ruler (stride.lightning_modules.style_ruler), with the content loss reported beside it.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, field_validator
from torch import nn

from stride.architectures import build
from stride.config.loading import config_to_dict
from stride.config.schema import DataConfig, Section, StrideConfig
from stride.datamodules.stylization import StylizationData
from stride.errors import StrideError
from stride.lightning_modules.perceptual import (
    LossNetwork,
    LossNetworkSpec,
    PerceptualLoss,
    PerceptualWeights,
    layer_channels,
    layer_names,
)
from stride.lightning_modules.stylization import StylizationModule
from stride.plots import plot_learning_curves
from stride.stylization_plots import plot_style_grid
from stride.tasks.base import DataFacts, Task, checked_datamodule_arguments, register_task

EVAL_BATCH_SIZE = 8
PREPARED_BY = "stride data prepare photos, image-folder or coco-images"
CURVES = ("loss", "style_ratio", "content_loss")  # learning-curve panels; the terms are logged as metrics


class StylizationDataOptions(DataConfig):
    batch_size: PositiveInt = 4  # Table 5.1
    normalize: Literal["none"] = "none"  # the network takes [0, 1] pixels and the loss network its own scaling
    cache: Literal["none", "memory"] = "none"
    horizontal_flip: bool = False
    # the longer side style images are scaled to for the loss's Gram matrices: the pattern scale (sec. 5.3.2)
    style_size: PositiveInt | None = 256


class StylizationLossOptions(Section):
    """Eq. 5.10: lambda_c * content + lambda_s * style + lambda_tv * total variation over a loss network."""

    network: Literal["vgg16", "vgg19"] = "vgg16"  # the fast method's (sec. 5.4.3)
    weights: str | None = None  # torchvision's VGG state dict (e.g. vgg16-397923af.pth); None: random filters
    seed: NonNegativeInt = 0  # of the random filters
    network_width: PositiveFloat = Field(default=1.0, le=1.0)  # channel multiplier, random filters only
    # the fast method's layers (sec. 5.4.3 lists conv_1_2 twice; read as Johnson et al. 2016's relu2_2)
    content_layers: dict[str, PositiveFloat] = {"conv2_2": 1.0}
    style_layers: dict[str, PositiveFloat] = {"conv1_2": 1.0, "conv2_2": 1.0, "conv3_3": 1.0, "conv4_3": 1.0}
    content_weight: NonNegativeFloat = 1.0
    style_weight: NonNegativeFloat = 1e4
    tv_weight: NonNegativeFloat = 1.0

    @field_validator("content_layers", "style_layers")
    @classmethod
    def _some_layers(cls, layers: dict[str, float]) -> dict[str, float]:
        if not layers:
            raise ValueError("name at least one layer (conv1_1 ... conv5_3 of the loss network)")
        return layers


class StylizationConfig(StrideConfig):
    task: Literal["stylization"] = "stylization"
    data: StylizationDataOptions
    loss: StylizationLossOptions = StylizationLossOptions()


def loss_spec(loss: StylizationLossOptions) -> LossNetworkSpec:
    return LossNetworkSpec(loss.network, loss.weights, loss.seed, loss.network_width)


def check_loss_options(loss: StylizationLossOptions) -> None:
    """Layer names, the width and the weights file's presence, checked before anything is built or read."""
    names = layer_names(loss.network)
    for section, layers in (("content_layers", loss.content_layers), ("style_layers", loss.style_layers)):
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise StrideError(f"loss.{section}: {unknown} are not layers of {loss.network} (layers: "
                              f"{', '.join(names)})")
    if loss.weights:
        if loss.network_width != 1:
            raise StrideError(f"loss.network_width={loss.network_width:g} applies to random filters only: ImageNet "
                              "weights come at width 1")
        if not Path(loss.weights).expanduser().is_file():
            raise StrideError(f"loss.weights: {loss.weights} is not a file (torchvision's {loss.network} state "
                              "dict, saved where every training process can read it)")


def perceptual_loss(loss: StylizationLossOptions) -> PerceptualLoss:
    weights = PerceptualWeights(dict(loss.content_layers), dict(loss.style_layers), loss.content_weight,
                                loss.style_weight, loss.tv_weight)
    return PerceptualLoss(LossNetwork(loss_spec(loss), weights.layers), weights)


class StylizationTask(Task):
    name = "stylization"
    config_class: ClassVar[type[StrideConfig]] = StylizationConfig
    dataset_tasks: ClassVar[tuple[str, ...]] = ("stylization",)
    quality = "style_ratio"
    quality_mode = "min"
    reported = ("content_loss", "style_loss", "loss")

    def datamodule(self, config: StrideConfig, **overrides: Any) -> StylizationData:
        data = config.data
        assert isinstance(data, StylizationDataOptions) and isinstance(config, StylizationConfig)
        check_loss_options(config.loss)
        kwargs = checked_datamodule_arguments(self, config, PREPARED_BY, **overrides)
        return StylizationData(data.path, horizontal_flip=data.horizontal_flip, **kwargs)

    def module(self, config: StrideConfig, facts: DataFacts) -> StylizationModule:
        assert isinstance(config, StylizationConfig) and isinstance(config.data, StylizationDataOptions)
        check_loss_options(config.loss)
        loss = config.loss
        network = build(config.model.architecture, input_shape=facts.input_shape, num_classes=facts.num_classes,
                        **config.model.params)
        channels = {name: layer_channels(loss.network, name, loss.network_width) for name in loss.style_layers}
        # the run's loss, for `stride bench`'s bare loop (batch_loss gets the network only); a plain attribute,
        # so neither the network's state dict nor its export carries it
        make_loss = partial(perceptual_loss, loss)
        network.__dict__["bench_loss"] = (make_loss, channels)
        description = {"config": config_to_dict(config), "data": facts.as_dict(),
                       "loss_network": loss_spec(loss).describe()}
        return StylizationModule(network, make_loss, channels, facts.num_classes,
                                 config.data.style_size, config.optim, config.schedule, description=description)

    def figures(self, module: Any, facts: DataFacts, history: list[dict[str, float]], folder: Path,
                title: str) -> list[Path]:
        assert isinstance(module, StylizationModule)  # made by self.module
        made = [plot_learning_curves(history, folder / "learning_curves.png", CURVES)] if history else []
        if module.grid_contents and module.style_images:
            styles, contents, results = module.grid()
            made.append(plot_style_grid(styles, contents, results, list(facts.class_names),
                                        folder / "stylized_test.png", f"{title} test images"))
        return made

    def batch_loss(self, network: nn.Module, batch: Any, forward: Any = None) -> torch.Tensor:
        """Eq. 5.10 over the run's own loss network (`stride bench`'s bare loop times what training computes,
        whatever the style targets hold)."""
        images = batch[0]
        make, channels = network.__dict__["bench_loss"]  # set by self.module
        perceptual = _BENCH.get(id(network))
        if perceptual is None:
            perceptual = _BENCH[id(network)] = make()
            perceptual.network.to(images.device)
        styles = int(getattr(network, "styles", 1))
        mixture = nn.functional.one_hot(torch.randint(styles, (len(images),), device=images.device), styles).float()
        outputs = (forward or network)(images, mixture)
        targets = {name: torch.zeros(styles, c, c, device=images.device) for name, c in channels.items()}
        return perceptual(outputs, images, targets, mixture)[0]

    def evaluation_data(self, path: str | Path, input_shape: tuple[int, ...] | None = None) -> StylizationData:
        return StylizationData(path, batch_size=EVAL_BATCH_SIZE, num_workers=0, pin_memory=False)


_BENCH: dict[int, PerceptualLoss] = {}  # network id -> its loss network, built once per benchmark


register_task(StylizationTask())
