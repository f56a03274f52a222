"""Pre-activation ResNets and Wide ResNets for 32x32 images (docs/models.md, D; He et al. 2016; Zagoruyko et al. 2016).

A 3x3 conv with 16 filters, three stacks of residual blocks on 32x32, 16x16 and 8x8 maps
(the first block of stacks 2 and 3 subsamples with a stride-2 convolution), BN-ReLU, global
average pooling and a linear layer (fig. 4.17). Blocks are pre-activated (fig. 4.16): regular
(two 3x3 convolutions of F filters) or bottleneck (1x1 F, 3x3 F, 1x1 4F); a 1x1 projection
shortcut wherever a block changes the shape.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from pydantic import PositiveInt
from torch import Tensor, nn

from stride.architectures.arithmetic import units_for_depth
from stride.architectures.hyperparameters import DropProbability
from stride.architectures.initialization import he_normal_
from stride.architectures.registry import register

STACK_WIDTHS = (16, 32, 64)
STEM_FILTERS = 16
BOTTLENECK_EXPANSION = 4


def _bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


class PreActBlock(nn.Module):
    """x + f(BN-ReLU(x)); a projection shortcut takes the pre-activated input too.

    With a projection both paths hold a convolution, so both are pre-activated and there is
    no asymmetry (sec. 4.5.2). Dropout, if any, sits between the two 3x3 convolutions (WRN).
    """

    def __init__(self, in_channels: int, width: int, stride: int, bottleneck: bool, dropout: float):
        super().__init__()
        self.out_channels = width * BOTTLENECK_EXPANSION if bottleneck else width
        self.preact = nn.Sequential(*_bn_relu(in_channels))
        if bottleneck:
            layers = [nn.Conv2d(in_channels, width, 1, bias=False), *_bn_relu(width),
                      nn.Conv2d(width, width, 3, stride, padding=1, bias=False), *_bn_relu(width),
                      nn.Conv2d(width, self.out_channels, 1, bias=False)]
        else:
            layers = [nn.Conv2d(in_channels, width, 3, stride, padding=1, bias=False), *_bn_relu(width),
                      *([nn.Dropout(dropout)] if dropout > 0 else []),
                      nn.Conv2d(width, width, 3, padding=1, bias=False)]
        self.residual = nn.Sequential(*layers)
        self.shortcut = (nn.Conv2d(in_channels, self.out_channels, 1, stride, bias=False)
                         if stride != 1 or in_channels != self.out_channels else None)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.preact(x)
        skip = x if self.shortcut is None else self.shortcut(activated)
        return self.residual(activated) + skip


def preact_resnet(input_shape: tuple[int, ...], num_classes: int, blocks_per_stack: int, bottleneck: bool,
                  widen_factor: int = 1, dropout: float = 0.0) -> nn.Sequential:
    """The network of fig. 4.17; its last three modules are GAP, Flatten and the linear classifier."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(conv=nn.Conv2d(input_shape[0], STEM_FILTERS, 3, padding=1,
                                                                     bias=False))
    channels = STEM_FILTERS
    for stack, width in enumerate(STACK_WIDTHS, start=1):
        blocks = []
        for index in range(blocks_per_stack):
            stride = 2 if stack > 1 and index == 0 else 1
            blocks.append(PreActBlock(channels, width * widen_factor, stride, bottleneck, dropout))
            channels = blocks[-1].out_channels
        layers[f"stack{stack}"] = nn.Sequential(*blocks)
    layers.update(norm=nn.BatchNorm2d(channels), relu=nn.ReLU(inplace=True), avgpool=nn.AdaptiveAvgPool2d(1),
                  flatten=nn.Flatten(), fc=nn.Linear(channels, num_classes))
    return he_normal_(nn.Sequential(layers), conv_mode="fan_out")  # as the authors' code


def _blocks_per_stack(depth: int, convs_per_block: int, offset: int, what: str) -> int:
    """n from depth = 3 * convs_per_block * n + offset: three stacks of n blocks."""
    return units_for_depth(depth, 3 * convs_per_block, offset, what)


@register("preact_resnet", task="classification")
def build_preact_resnet(*, input_shape: tuple[int, ...], num_classes: int, depth: PositiveInt = 20,
                        block: Literal["regular", "bottleneck"] = "regular") -> nn.Module:
    """Pre-activation ResNet-N for CIFAR (Table 4.5): depth 6n+2 (regular blocks) or 9n+2 (bottleneck)."""
    bottleneck = block == "bottleneck"
    n = _blocks_per_stack(depth, 3 if bottleneck else 2, 2, f"pre-activation ResNet with {block} blocks")
    return preact_resnet(input_shape, num_classes, n, bottleneck)


@register("wide_resnet", task="classification")
def build_wide_resnet(*, input_shape: tuple[int, ...], num_classes: int, depth: PositiveInt = 28,
                      widen_factor: PositiveInt = 10, dropout: DropProbability = 0.0) -> nn.Module:
    """WRN-(N,k) (sec. 4.5.4): regular pre-activation blocks k times wider; depth 6n+4, as Zagoruyko et al. count."""
    n = _blocks_per_stack(depth, 2, 4, "wide ResNet")
    return preact_resnet(input_shape, num_classes, n, bottleneck=False, widen_factor=widen_factor, dropout=dropout)
