"""The pastiche network of fast style transfer (docs/models.md, "Neural style transfer"; dissertation Table 5.1,
after Johnson et al. 2016 with Dumoulin et al. 2017's changes).

9x9 conv -> two stride-2 3x3 downsamplings -> five residual blocks -> two (nearest-neighbour x2, 3x3 conv)
upsamplings -> 9x9 conv to RGB; every convolution but the last is followed by instance normalisation and a
ReLU. With several styles each normalisation is conditional (eq. 5.13): one (gamma, beta) pair per style, and
a convex combination of the pairs blends styles (eq. 5.14). The network is fully convolutional, so it stylises
any image size: each upsampling returns to the size its downsampling started from (x2 for even sizes).

The last layer is the table's 150 * tanh in the VGG input range (0-255 pixels less the ImageNet channel means),
written here for [0, 1] pixels: mean/255 + (150/255) * tanh(x). Weights start Gaussian with std 0.05 (Table 5.1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import Tensor, nn

from stride.architectures.registry import register

IMAGENET_MEAN_255 = (123.68, 116.779, 103.939)  # the dissertation's footnote 7, subtracted from VGG inputs
OUTPUT_SCALE_255 = 150.0


class ConditionalInstanceNorm(nn.Module):
    """Instance normalisation whose scale and shift are a style mixture's blend of per-style pairs (eqs.
    5.12-5.14); with one style it is plain instance normalisation."""

    def __init__(self, channels: int, styles: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(styles, channels))
        self.beta = nn.Parameter(torch.zeros(styles, channels))

    def forward(self, x: Tensor, mixture: Tensor) -> Tensor:
        """`mixture`: N x S style weights, each row summing to 1."""
        normed = F.instance_norm(x, eps=1e-5)
        gamma = (mixture @ self.gamma)[:, :, None, None]
        beta = (mixture @ self.beta)[:, :, None, None]
        return normed * gamma + beta


class ConvNorm(nn.Module):
    """(optional nearest-neighbour x2) -> reflection-padded conv -> conditional IN -> optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, styles: int, stride: int = 1, upsample: bool = False,
                 relu: bool = True):
        super().__init__()
        self.upsample, self.relu = upsample, relu
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride)
        self.norm = ConditionalInstanceNorm(cout, styles)

    def forward(self, x: Tensor, mixture: Tensor, size: Any = None) -> Tensor:
        if self.upsample:  # nearest-neighbour x2, to the size the matching downsampling started from
            x = F.interpolate(x, size=size, mode="nearest")
        x = self.norm(self.conv(self.pad(x)), mixture)
        return F.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, styles: int):
        super().__init__()
        self.first = ConvNorm(channels, channels, 3, styles)
        self.second = ConvNorm(channels, channels, 3, styles, relu=False)

    def forward(self, x: Tensor, mixture: Tensor) -> Tensor:
        return x + self.second(self.first(x, mixture), mixture)


class PasticheNetwork(nn.Module):
    """[0, 1] RGB images and N x S style weights -> stylised [0, 1] RGB images of the same size."""

    center: Tensor  # buffer

    def __init__(self, styles: int = 1, width: int = 16, residual_blocks: int = 5, init_std: float = 0.05):
        super().__init__()
        self.styles = styles
        w = width
        self.down = nn.ModuleList([ConvNorm(3, w, 9, styles), ConvNorm(w, 2 * w, 3, styles, stride=2),
                                   ConvNorm(2 * w, 4 * w, 3, styles, stride=2)])
        self.residual = nn.ModuleList([ResidualBlock(4 * w, styles) for _ in range(residual_blocks)])
        self.up = nn.ModuleList([ConvNorm(4 * w, 2 * w, 3, styles, upsample=True),
                                 ConvNorm(2 * w, w, 3, styles, upsample=True)])
        self.out = nn.Sequential(nn.ReflectionPad2d(4), nn.Conv2d(w, 3, 9))
        self.register_buffer("center", torch.tensor(IMAGENET_MEAN_255).view(1, 3, 1, 1) / 255)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: Tensor, mixture: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        x, sizes = images, []
        for layer in self.down:
            sizes.append(x.shape[-2:])
            x = layer(x, mixture)
        for block in self.residual:
            x = block(x, mixture)
        for layer, size in zip(self.up, reversed(sizes[1:])):
            x = layer(x, mixture, size)
        return self.center + (OUTPUT_SCALE_255 / 255) * torch.tanh(self.out(x))


@register("pastiche_net", task="stylization")
def pastiche_net(*, input_shape: tuple[int, ...], num_classes: int, width: PositiveInt = 16,
                 residual_blocks: PositiveInt = 5) -> nn.Module:
    """Table 5.1's network (width 16: 16-32-64 feature maps) with one normalisation pair per style; `num_classes`
    is the dataset's number of styles, `input_shape` only its training size (any size is stylised)."""
    return PasticheNetwork(styles=num_classes, width=width, residual_blocks=residual_blocks)
