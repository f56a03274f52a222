"""Network in Network, its batch-normalised version and BN-VGG (docs/models.md, D; Tables 4.2-4.4).

NiN: three modules of a KxK convolution and two 1x1 convolutions (each followed by ReLU, or
BN-ReLU in BN-NiN), max-pool 3/2 + dropout 0.5 after the first, average-pool 3/2 + dropout
0.5 after the second, and global average pooling of the last module's class maps. Pools are
'SAME': padding 1 gives ceil(n/2) outputs (TF pads one side only, so border values differ
on even sizes; average pools leave the padding out of the mean, as TF does).
"""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt
from torch import nn

from stride.architectures.arithmetic import check_spatial, conv_output_size
from stride.architectures.initialization import gaussian_, he_normal_
from stride.architectures.registry import register
from stride.errors import StrideError

# Table 4.2: (F1, F2, F3) of each module; the last module's F3 is the number of classes.
NIN_FILTERS: dict[str, list[list[int]]] = {
    "mnist": [[128, 96, 48], [128, 96, 48], [128, 96]],
    "cifar": [[192, 168, 96], [192, 192, 192], [192, 192]],
    "svhn": [[128, 96, 64], [320, 256, 128], [384, 256]],
}
NIN_GAUSSIAN_STD = 0.05  # Table 4.2; BN-NiN uses He initialisation (Table 4.3)
NIN_DROPOUT = 0.5


def _conv_act(in_channels: int, out_channels: int, kernel_size: int, batch_norm: bool) -> list[nn.Module]:
    """Conv 'SAME' then ReLU, or BN-ReLU (a convolution followed by BN needs no bias)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
    return [conv, *([nn.BatchNorm2d(out_channels)] if batch_norm else []), nn.ReLU(inplace=True)]


def _nin_filters(filters: str | list[list[int]], num_classes: int) -> list[list[int]]:
    chosen = NIN_FILTERS[filters] if isinstance(filters, str) else filters
    if [len(module) for module in chosen] != [3, 3, 2]:
        raise StrideError(f"model.filters: expected [[F1, F2, F3], [F1, F2, F3], [F1, F2]] (the last module ends "
                          f"in the {num_classes} classes) or one of {', '.join(NIN_FILTERS)}; got {filters!r}")
    return [list(module) for module in chosen[:2]] + [[*chosen[2], num_classes]]


@register("nin", task="classification")
def build_nin(*, input_shape: tuple[int, ...], num_classes: int,
              filters: Literal["mnist", "cifar", "svhn"] | list[list[PositiveInt]] = "cifar",
              kernel_size: PositiveInt = 5, batch_norm: bool = False) -> nn.Module:
    """NiN (Table 4.2), or BN-NiN with `batch_norm` (Table 4.3): three NiN modules, class maps, global average pooling.

    Per-dataset filter sets by name, or explicit [[F1, F2, F3], [F1, F2, F3], [F1, F2]].
    """
    modules = _nin_filters(filters, num_classes)
    layers: list[nn.Module] = []
    channels = input_shape[0]
    pools = [nn.MaxPool2d(3, 2, padding=1), nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)]
    for index, module in enumerate(modules):
        for position, width in enumerate(module):
            layers += _conv_act(channels, width, kernel_size if position == 0 else 1, batch_norm)
            channels = width
        if index < len(pools):
            layers += [pools[index], nn.Dropout(NIN_DROPOUT)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    network = nn.Sequential(*layers)
    return he_normal_(network) if batch_norm else gaussian_(network, NIN_GAUSSIAN_STD)


# Table 4.4: (filters, convolutions, dropout after all but the last convolution) of each stage.
BN_VGG_STAGES = ((64, 2, 0.3), (128, 2, 0.4), (256, 3, 0.4), (512, 3, 0.4), (512, 3, 0.4))
BN_VGG_HIDDEN = 512
BN_VGG_HIDDEN_DROPOUT = 0.5


@register("bn_vgg", task="classification")
def build_bn_vgg(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """BN-VGG (Table 4.4): 13 3x3 conv-BN-ReLU in five max-pooled stages, FC512-BN-ReLU-dropout, FC to the classes."""
    channels, height, width = input_shape
    layers: list[nn.Module] = []
    for filters, convs, dropout in BN_VGG_STAGES:
        for index in range(convs):
            layers += _conv_act(channels, filters, 3, batch_norm=True)
            channels = filters
            if index < convs - 1:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.MaxPool2d(2, 2))
        height, width = (conv_output_size(n, 2, stride=2) for n in (height, width))
    check_spatial("bn_vgg", input_shape, height, width)
    layers += [nn.Flatten(), nn.Linear(channels * height * width, BN_VGG_HIDDEN, bias=False),
               nn.BatchNorm1d(BN_VGG_HIDDEN), nn.ReLU(inplace=True), nn.Dropout(BN_VGG_HIDDEN_DROPOUT),
               nn.Linear(BN_VGG_HIDDEN, num_classes)]
    return he_normal_(nn.Sequential(*layers))
