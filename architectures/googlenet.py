"""GoogLeNet (Inception v1, Szegedy et al. 2014) from torchvision's class with the paper's blocks (docs/models.md, C).

Imported only when a GoogLeNet is built: importing torchvision's models costs seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torchvision.models as tv
from torch import Tensor, nn
from torchvision.models.googlenet import BasicConv2d, Inception, InceptionAux

from stride.architectures.outputs import AuxiliaryLogits

AUX_LOSS_WEIGHT = 0.3  # "multiplied by a factor of 0.3"; the heads are discarded at test time
DROPOUT = 0.4  # Szegedy et al. 2014, sec. 5 (torchvision's default is 0.2)
AUX_DROPOUT = 0.7


class PlainConv2d(nn.Module):
    """Convolution with bias, then ReLU: the paper's unit (torchvision's BasicConv2d adds batch normalisation)."""

    def __init__(self, in_channels: int, out_channels: int, **conv: Any):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, **conv)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x))


class PaperInception(Inception):
    """torchvision's Inception module with the paper's 5x5 convolution, where torchvision keeps a 3x3 (vision#906)."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, conv_block: Callable[..., nn.Module]):
        super().__init__(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, conv_block)
        self.branch3[1] = conv_block(ch5x5red, ch5x5, kernel_size=5, padding=2)


class GoogLeNet(tv.GoogLeNet):
    """torchvision's GoogLeNet returning `AuxiliaryLogits` while training, plain logits otherwise."""

    def eager_outputs(self, x: Tensor, aux2: Tensor, aux1: Tensor | None) -> Any:
        if self.training and self.aux_logits:
            assert aux1 is not None  # torchvision's forward runs the first auxiliary head whenever this one runs
            return AuxiliaryLogits(x, (aux1, aux2), AUX_LOSS_WEIGHT)
        return x


def googlenet(num_classes: int, auxiliary_heads: bool, batch_norm: bool) -> GoogLeNet:
    """The paper's network (conv + ReLU units, LRN after the first pool and after conv3, 5x5 convolutions,
    dropout 0.4), or with torchvision's BN-conv units and no LRN."""
    conv = BasicConv2d if batch_norm else PlainConv2d
    network = GoogLeNet(num_classes=num_classes, aux_logits=auxiliary_heads, init_weights=True,
                        blocks=[conv, partial(PaperInception, conv_block=conv), partial(InceptionAux, conv_block=conv)],
                        dropout=DROPOUT, dropout_aux=AUX_DROPOUT)
    if not batch_norm:  # size 5, alpha 1e-4, beta 0.75, as the authors' Caffe model
        network.maxpool1 = nn.Sequential(network.maxpool1, nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75))
        network.maxpool2 = nn.Sequential(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75), network.maxpool2)
    return network
