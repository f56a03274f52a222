"""DenseNet-(L,k) and DenseNet-BC for 32x32 images (docs/models.md, D, sec. 4.6; Huang et al. 2017).

A 3x3 convolution, three dense blocks on 32x32, 16x16 and 8x8 maps joined by transitions
(pre-activated 1x1 convolution + 2x2 average pool), BN-ReLU, global average pooling and a
linear layer. Each layer of a block is BN-ReLU-conv3x3 with `growth_rate` filters (B: after a
BN-ReLU-conv1x1 with 4k filters) and its output is concatenated to its input. Compression
theta (C) makes each transition output floor(theta * C) maps. Dropout, if any, follows every
convolution (the seed uses 0.2 without data augmentation).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from pydantic import PositiveInt
from torch import Tensor, nn

from stride.architectures.arithmetic import units_for_depth
from stride.architectures.hyperparameters import DropProbability, Fraction
from stride.architectures.initialization import he_normal_
from stride.architectures.registry import register

BLOCKS = 3
BOTTLENECK_WIDTH = 4  # bottleneck maps per unit of growth rate (4k)


def _preact_conv(in_channels: int, out_channels: int, kernel_size: int, dropout: float) -> list[nn.Module]:
    layers = [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
              nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)]
    return layers + ([nn.Dropout(dropout)] if dropout > 0 else [])


class DenseLayer(nn.Module):
    """[x, H(x)]: the layer's k new maps concatenated to everything before it (eq. of sec. 4.6)."""

    def __init__(self, in_channels: int, growth_rate: int, bottleneck: bool, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        if bottleneck:
            layers += _preact_conv(in_channels, BOTTLENECK_WIDTH * growth_rate, 1, dropout)
            in_channels = BOTTLENECK_WIDTH * growth_rate
        self.new_features = nn.Sequential(*layers, *_preact_conv(in_channels, growth_rate, 3, dropout))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.new_features(x)], 1)


def _layers_per_block(depth: int, bottleneck: bool) -> int:
    """n from N = 3n + 4 (vanilla) or 6n + 4 (bottleneck layers hold two convolutions), or a StrideError."""
    return units_for_depth(depth, BLOCKS * (2 if bottleneck else 1), 4, f"DenseNet{'-B' if bottleneck else ''}")


@register("densenet", task="classification")
def build_densenet(*, input_shape: tuple[int, ...], num_classes: int, depth: PositiveInt = 40,
                   growth_rate: PositiveInt = 12, bottleneck: bool = False, compression: Fraction = 1.0,
                   dropout: DropProbability = 0.0, initial_filters: PositiveInt | None = None) -> nn.Module:
    """DenseNet-(L,k) for CIFAR/SVHN; bottleneck + compression 0.5 make DenseNet-BC (sec. 4.6.2).

    `initial_filters` defaults to 16 (the seed's vanilla DenseNet) or 2k with bottlenecks (Huang et al.).
    """
    n = _layers_per_block(depth, bottleneck)
    channels = initial_filters or (2 * growth_rate if bottleneck else 16)
    layers: OrderedDict[str, nn.Module] = OrderedDict(conv=nn.Conv2d(input_shape[0], channels, 3, padding=1,
                                                                     bias=False))
    for block in range(1, BLOCKS + 1):
        units = []
        for _ in range(n):
            units.append(DenseLayer(channels, growth_rate, bottleneck, dropout))
            channels += growth_rate
        layers[f"block{block}"] = nn.Sequential(*units)
        if block < BLOCKS:
            out_channels = int(compression * channels)
            layers[f"transition{block}"] = nn.Sequential(*_preact_conv(channels, out_channels, 1, dropout),
                                                         nn.AvgPool2d(2))
            channels = out_channels
    layers.update(norm=nn.BatchNorm2d(channels), relu=nn.ReLU(inplace=True), avgpool=nn.AdaptiveAvgPool2d(1),
                  flatten=nn.Flatten(), fc=nn.Linear(channels, num_classes))
    return he_normal_(nn.Sequential(layers), conv_mode="fan_out")  # as the authors' code
