"""The seeds' digit classifiers (docs/models.md, A1): Tables 1 and 2 of the TCN study, and the three-block CNN of
its Swedish companion (001, Figure 10).

The tables' networks put BatchNorm *before* each conv/linear layer, as the tables do. The final
softmax is left to the loss (cross-entropy takes logits).
"""

from __future__ import annotations

from pydantic import PositiveInt
from torch import nn

from stride.architectures.registry import register


def _bn_conv_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, out_channels, 3), nn.ReLU(inplace=True)]


@register("digits_cnn", task="classification")
def build_digits_cnn(*, input_shape: tuple[int, ...], num_classes: int, channels: PositiveInt = 64) -> nn.Module:
    """Table 1 CNN: five BN-conv3x3-ReLU (valid), two max-pools, BN-conv3x3 to the classes."""
    in_channels = input_shape[0]
    return nn.Sequential(
        *_bn_conv_relu(in_channels, channels),
        *_bn_conv_relu(channels, channels),
        nn.MaxPool2d(2),
        *_bn_conv_relu(channels, channels),
        *_bn_conv_relu(channels, channels),
        *_bn_conv_relu(channels, channels),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(channels),
        nn.Conv2d(channels, num_classes, 3),
        # 28x28 input ends at 1x1 exactly as in the seed; other sizes are averaged down to it.
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


@register("digits_ffn", task="classification")
def build_digits_ffn(
    *, input_shape: tuple[int, ...], num_classes: int, hidden_units: PositiveInt = 128, hidden_layers: PositiveInt = 5
) -> nn.Module:
    """Table 2 feed-forward net: flatten, hidden_layers x BN-linear-ReLU, BN-linear to the classes."""
    in_features = 1
    for size in input_shape:
        in_features *= size
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for _ in range(hidden_layers):
        layers += [nn.BatchNorm1d(width), nn.Linear(width, hidden_units), nn.ReLU(inplace=True)]
        width = hidden_units
    layers += [nn.BatchNorm1d(width), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


@register("three_block_cnn", task="classification")
def build_three_block_cnn(*, input_shape: tuple[int, ...], num_classes: int, channels: PositiveInt = 32) -> nn.Module:
    """001's Figure 10: three blocks of conv 5x5 stride 2, BN, ReLU, then a linear layer to the softmax. The
    figure gives neither widths nor padding: `channels`, doubled per block, and padding 2 are stride's."""
    layers: list[nn.Module] = []
    width, side, height = input_shape[0], input_shape[-1], input_shape[-2]
    for block in range(3):
        out = channels * 2 ** block
        layers += [nn.Conv2d(width, out, 5, stride=2, padding=2), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        width, side, height = out, (side + 1) // 2, (height + 1) // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * side * height, num_classes))
