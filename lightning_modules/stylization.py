"""Training a pastiche network with perceptual losses (docs/stylization.md; dissertation sec. 5.4-5.5).

Each training image gets one style drawn at random (sec. 5.5.1), so a multi-style network sees every style in
every epoch. Validation and test stylise every image in every style and measure the results twice: with the
run's own loss (its loss network and weights: `val_loss`, the terms beside it) and with the fixed ruler of
stride.lightning_modules.style_ruler (`val_style_ratio`, `val_content_loss`, `val_style_loss`), the numbers that
compare models and that `stride evaluate` reproduces from the logged model.

The style images' Gram matrices under the loss network are buffers, filled from the datamodule's styles when
a fit starts, so a checkpoint resumes without the style files; the loss network itself is rebuilt from the
config and never saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from stride.config.schema import OptimConfig, ScheduleConfig
from stride.errors import StrideError
from stride.lightning_modules.base import StrideModule
from stride.lightning_modules.perceptual import PerceptualLoss, gram, resized_for_style
from stride.lightning_modules.style_ruler import StyleRuler

GRID_CONTENTS = 3  # test images shown in the grid figure


def style_tensors(images: list[np.ndarray]) -> list[Tensor]:
    """uint8 H x W x 3 style images as float 3 x H x W tensors in [0, 1]."""
    return [torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 for image in images]


def every_style(images: Tensor, styles: int) -> tuple[Tensor, Tensor, Tensor]:
    """Each image repeated once per style: (images N*S, one-hot mixtures N*S x S, style ids N*S)."""
    ids = torch.arange(styles, device=images.device).repeat(images.shape[0])  # not len(): export keeps N free
    return images.repeat_interleave(styles, dim=0), nn.functional.one_hot(ids, styles).float(), ids


class StylizationModule(StrideModule):
    """A pastiche network (stride.architectures.stylization) trained against the styles of its dataset."""

    def __init__(self, network: nn.Module, perceptual: Callable[[], PerceptualLoss], style_channels: dict[str, int],
                 styles: int, style_size: int | None, optim: OptimConfig, schedule: ScheduleConfig,
                 description: dict[str, Any] | None = None):
        """`perceptual` builds the loss (its network's weights file is read when a fit starts, not when a
        checkpoint is only rebuilt for its pastiche network); `style_channels`: each style layer's width."""
        super().__init__(network, optim, schedule, description)
        self.styles, self.style_size = styles, style_size
        self._make_perceptual = perceptual
        self._perceptual: list[PerceptualLoss] = []  # a list: as an attribute the loss network would be saved
        self.style_layers = list(style_channels)
        for name, channels in style_channels.items():
            self.register_buffer(f"gram_{name}", torch.zeros(styles, channels, channels))
        self.targets_ready: Tensor
        self.register_buffer("targets_ready", torch.tensor(False))
        self.ruler: StyleRuler | None = None
        self.style_images: list[Tensor] = []
        self.grid_contents: list[Tensor] = []
        self._ratio_sums: dict[str, Tensor] = {}  # split -> (summed style loss, summed unstyled style loss)

    @property
    def perceptual(self) -> PerceptualLoss:
        if not self._perceptual:
            self._perceptual.append(self._make_perceptual())
        return self._perceptual[0]

    def targets(self) -> dict[str, Tensor]:
        return {name: getattr(self, f"gram_{name}") for name in self.style_layers}

    # -- the styles ----------------------------------------------------------------------------------
    def use_styles(self, images: list[np.ndarray]) -> None:
        """The dataset's style images: the ruler's targets, and the loss's unless a checkpoint brought them."""
        if len(images) != self.styles:
            raise StrideError(f"the dataset has {len(images)} style image(s); this network was built for "
                              f"{self.styles}")
        self.style_images = style_tensors(images)
        self.ruler = StyleRuler(self.style_images, self.device)
        if not bool(self.targets_ready):
            network = self.perceptual.network.to(self.device)
            with torch.no_grad():
                for index, image in enumerate(self.style_images):
                    sized = resized_for_style(image.to(self.device), self.style_size)[None]
                    for name, found in network(sized).items():
                        if name in self.perceptual.weights.style_layers:
                            getattr(self, f"gram_{name}")[index] = gram(found)[0]
            self.targets_ready.fill_(True)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "style_images"):
            raise StrideError("a stylization module trains on a stylization dataset (its datamodule gives the "
                              "style images)")
        self.use_styles(datamodule.style_images())

    # -- steps ---------------------------------------------------------------------------------------
    def forward(self, images: Tensor, mixture: Tensor) -> Tensor:  # type: ignore[override]
        return (self.compiled_forward or self.network)(images, mixture)

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        images = batch[0]
        if self.perceptual.network.mean.device != images.device:  # once per device, not per step
            self.perceptual.network.to(images.device)
        if split == "train":
            ids = torch.randint(self.styles, (len(images),), device=images.device)
            contents, mixture = images, nn.functional.one_hot(ids, self.styles).float()
        else:
            contents, mixture, ids = every_style(images, self.styles)
        outputs = self(contents, mixture)
        loss, parts = self.perceptual(outputs, contents, self.targets(), mixture)
        count = len(contents)
        self.log_mean(f"{split}_loss", loss, count)
        for name, values in parts.items():
            self.log_mean(f"{split}_{name}_term", values.mean(), count)
        if split == "train":
            self.log_step_loss(loss)
            return loss
        assert self.ruler is not None  # setup gave the styles
        measured = self.ruler.measure(outputs.float().clamp(0, 1), contents, ids)
        for name, values in measured.items():
            self.log_mean(f"{split}_{name}", values.mean(), count)
        self._ratio_sums[split] = self._ratio_sums.get(split, 0) + torch.stack(
            [measured["style_loss"].sum(), measured["unstyled_style_loss"].sum()]).double()
        if split == "test" and len(self.grid_contents) < GRID_CONTENTS:
            self.grid_contents += [image.detach().cpu() for image in images[:GRID_CONTENTS - len(self.grid_contents)]]
        return loss

    def _eval_epoch_start(self, split: str) -> None:
        self._ratio_sums.pop(split, None)
        if split == "test":
            self.grid_contents = []

    def _log_epoch(self, split: str) -> None:
        """`style_ratio`: the ratio of the split's summed style losses, over every rank's images."""
        sums = self._ratio_sums.pop(split, None)
        if sums is None:
            return
        styled, unstyled = self.trainer.strategy.reduce(sums, reduce_op="sum")
        self.log(f"{split}_style_ratio", float(StyleRuler.ratio(styled, unstyled)), on_step=False, on_epoch=True,
                 batch_size=1)

    @torch.no_grad()
    def grid(self) -> tuple[list[Tensor], list[Tensor], list[list[Tensor]]]:
        """(style images, content images, results[style][content]) for the figure, on the CPU."""
        network = self.network.eval().cpu()
        contents = torch.stack(self.grid_contents) if self.grid_contents else torch.zeros(0, 3, 8, 8)
        eye = torch.eye(self.styles)
        results = [list(network(contents, eye[s].expand(len(contents), -1)).clamp(0, 1)) for s in range(self.styles)]
        return self.style_images, list(contents), results
