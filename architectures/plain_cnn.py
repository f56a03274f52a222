"""Convolution stages, each closed by a 2x2/2 pool, then fully-connected layers: LeNet-5 and its descendants.

LeNet-5 (docs/models.md, C), the dissertation's MNIST baseline (D, Table 4.1) and the CUDA
thesis's four models (B, Tables 3.2-3.5) are all this shape and differ only in the numbers
a `PlainCNN` holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from stride.architectures.arithmetic import check_spatial, conv_output_size


@dataclass(frozen=True)
class PlainCNN:
    stages: tuple[tuple[int, ...], ...]  # the filters of each convolution, stage by stage
    hidden_units: tuple[int, ...]  # fully-connected layers between the last pool and the classes
    kernel_size: int = 5
    padding: int = 2  # 2 keeps 5x5 convolutions 'SAME'
    pool: type[nn.Module] = nn.MaxPool2d
    activation: type[nn.Module] = nn.ReLU


def build_plain_cnn(spec: PlainCNN, name: str, input_shape: tuple[int, ...], num_classes: int,
                    dropout: float) -> nn.Sequential:
    """Conv-activation per filter, a pool after each stage, then [linear, activation, dropout] per hidden layer.

    Dropout follows each hidden layer only (none when `dropout` is 0).
    """
    channels, height, width = input_shape
    layers: list[nn.Module] = []
    for stage in spec.stages:
        for filters in stage:
            layers += [nn.Conv2d(channels, filters, spec.kernel_size, padding=spec.padding), spec.activation()]
            channels = filters
            height, width = (conv_output_size(n, spec.kernel_size, padding=spec.padding) for n in (height, width))
        layers.append(spec.pool(2, 2))
        height, width = (conv_output_size(n, 2, stride=2) for n in (height, width))
    check_spatial(name, input_shape, height, width)
    layers.append(nn.Flatten())
    features = channels * height * width
    for units in spec.hidden_units:
        layers += [nn.Linear(features, units), spec.activation()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        features = units
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)
