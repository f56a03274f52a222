"""Small MNIST-sized classifiers: LeNet-5 (docs/models.md, C) and the dissertation's baseline (D, Table 4.1)."""

from __future__ import annotations

from torch import nn

from stride.architectures.hyperparameters import DropProbability
from stride.architectures.initialization import he_normal_
from stride.architectures.plain_cnn import PlainCNN, build_plain_cnn
from stride.architectures.registry import register

# LeCun et al. 1998: C1 6@5x5, S2, C3 16@5x5, S4, C5 120, F6 84, all tanh. C5 is a 5x5 convolution
# over a 5x5 map, i.e. a linear layer on the flattened map (same 48,120 parameters).
LENET5 = PlainCNN(stages=((6,), (16,)), hidden_units=(120, 84), padding=0, pool=nn.AvgPool2d, activation=nn.Tanh)
LENET5_INPUT_PX = 32  # LeCun pads MNIST's 28x28 digits to 32x32
BASELINE = PlainCNN(stages=((32,), (64,)), hidden_units=(200,), pool=nn.AvgPool2d)  # Table 4.1


@register("lenet5", task="classification")
def build_lenet5(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet-5 with a full C3 and a linear output layer; smaller inputs are zero-padded to 32x32; 61,706 parameters."""
    channels, height, width = input_shape
    pad_h, pad_w = max(0, LENET5_INPUT_PX - height), max(0, LENET5_INPUT_PX - width)
    padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    network = build_plain_cnn(LENET5, "lenet5", (channels, height + pad_h, width + pad_w), num_classes, dropout=0.0)
    return nn.Sequential(nn.ZeroPad2d(padding), *network) if pad_h or pad_w else network


@register("mnist_baseline", task="classification")
def build_mnist_baseline(*, input_shape: tuple[int, ...], num_classes: int,
                         dropout: DropProbability = 0.5) -> nn.Module:
    """Table 4.1 baseline: conv32-avgpool-conv64-avgpool (5x5 SAME, ReLU), FC200-dropout-FC; 681,506 parameters."""
    return he_normal_(build_plain_cnn(BASELINE, "mnist_baseline", input_shape, num_classes, dropout))
