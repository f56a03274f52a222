"""The lecture notes' ImageNet networks (docs/models.md, C) for ImageNet-shaped inputs (3x224x224; AlexNet 3x227x227).

torchvision builds every one that it implements as the notes describe it, always untrained
(weights=None: nothing is downloaded): VGG-16, the ResNets and the DenseNets from the notes'
block counts, GoogLeNet from torchvision's class with the paper's blocks. AlexNet is written
here because torchvision's is the later one-GPU variant (64/192/384/256/256 filters,
61,100,840 parameters), not the notes' 96/256/384/384/256 (62,378,344 without grouping).
torchvision is imported when one of its networks is built, not with the registry: its models
module costs seconds to import.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import nn

from stride.architectures.hyperparameters import DropProbability
from stride.architectures.registry import register
from stride.errors import StrideError

# The notes' block counts per stage: residual blocks (torchvision's block class) and dense layers.
RESNET_BLOCKS: dict[int, tuple[str, list[int]]] = {
    18: ("BasicBlock", [2, 2, 2, 2]), 34: ("BasicBlock", [3, 4, 6, 3]), 50: ("Bottleneck", [3, 4, 6, 3]),
    101: ("Bottleneck", [3, 4, 23, 3]), 152: ("Bottleneck", [3, 8, 36, 3]),
}
DENSENET_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32), 264: (6, 12, 64, 48),
}
DENSENET_GROWTH_RATE = 32
DENSENET_STEM_FILTERS = 64


def _require_colour(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise StrideError(f"architecture {name!r} takes 3-channel images (C, H, W); the data's input shape is "
                          f"{tuple(input_shape)}")


def _alexnet_lrn() -> nn.Module:
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)  # Krizhevsky et al. 2012, sec. 3.3


@register("alexnet", task="classification")
def build_alexnet(*, input_shape: tuple[int, ...], num_classes: int, dropout: DropProbability = 0.5) -> nn.Module:
    """AlexNet as the notes tabulate it: 5 convs (96/256/384/384/256, ungrouped), LRN, 3 FC; 62,378,344 parameters.

    LRN follows the first two max-pools, in the notes' order. An adaptive average pool to 6x6,
    a no-op at 227x227 (as in torchvision), lets other sizes through.
    """
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 96, 11, stride=4), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2), _alexnet_lrn(),
        nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2), _alexnet_lrn(),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
    classifier = nn.Sequential(
        nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes))
    return nn.Sequential(OrderedDict(features=features, avgpool=nn.AdaptiveAvgPool2d(6), flatten=nn.Flatten(),
                                     classifier=classifier))


@register("googlenet", task="classification")
def build_googlenet(*, input_shape: tuple[int, ...], num_classes: int, auxiliary_heads: bool = True,
                    batch_norm: bool = False) -> nn.Module:
    """GoogLeNet (Inception v1) with two auxiliary heads, losses weighted 0.3 in training; 6,998,552 parameters without.

    `batch_norm` swaps the paper's conv + ReLU units for torchvision's BN-conv units (and drops LRN).
    """
    from stride.architectures.googlenet import googlenet

    _require_colour("googlenet", input_shape)
    return googlenet(num_classes, auxiliary_heads, batch_norm)


def _vgg16(num_classes: int) -> nn.Module:
    import torchvision.models as tv

    return tv.vgg16(weights=None, num_classes=num_classes)


def _resnet(depth: int) -> Callable[[int], nn.Module]:
    def make(num_classes: int) -> nn.Module:
        import torchvision.models.resnet as tv_resnet

        block, layers = RESNET_BLOCKS[depth]
        return tv_resnet.ResNet(getattr(tv_resnet, block), layers, num_classes=num_classes)

    return make


def _densenet(depth: int) -> Callable[[int], nn.Module]:
    def make(num_classes: int) -> nn.Module:
        """torchvision's DenseNet with its functional ReLU-pool-flatten head made modules, so that the network
        ends in GAP, Flatten and the linear classifier like every other GAP + linear network here."""
        import torchvision.models as tv

        network = tv.DenseNet(DENSENET_GROWTH_RATE, DENSENET_BLOCKS[depth], DENSENET_STEM_FILTERS,
                              num_classes=num_classes)
        return nn.Sequential(OrderedDict(features=network.features, relu=nn.ReLU(inplace=True),
                                         avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                         fc=network.classifier))

    return make


def _register_torchvision(name: str, summary: str, make: Callable[[int], nn.Module]) -> None:
    def build(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        _require_colour(name, input_shape)
        return make(num_classes)

    build.__doc__ = summary
    register(name, task="classification")(build)


_register_torchvision("vgg16", "VGG-16 (configuration D): 13 3x3 convs in five max-pooled stages, FC4096-FC4096-FC; "
                      "138,357,544 parameters", _vgg16)
for _depth, (_block, _layers) in RESNET_BLOCKS.items():
    _register_torchvision(f"resnet{_depth}", f"ResNet-{_depth}: {_block} x {_layers} (torchvision's v1.5)",
                          _resnet(_depth))
for _depth, _blocks in DENSENET_BLOCKS.items():
    _register_torchvision(f"densenet{_depth}", f"DenseNet-{_depth}: dense blocks {list(_blocks)}, growth rate 32",
                          _densenet(_depth))
