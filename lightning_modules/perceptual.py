"""Perceptual losses of neural style transfer (docs/models.md, "Neural style transfer"; Gatys et al. 2016, Johnson
et al. 2016): images compared through the features of a frozen loss network.

- content: the mean squared difference of one or more layers' features (eq. 5.5);
- style: the mean squared difference of the layers' Gram matrices g_ij = (1/HW) sum f_i f_j (eqs. 5.6-5.8);
- total variation: squared neighbour differences (eq. 5.9 with beta = 2), averaged over pixels here rather
  than summed, so one weight serves every image size.

The loss network is VGG-16 or VGG-19's convolutional part (torchvision's layout), its layers named as the
research names them (`conv4_2` is the ReLU output of block 4's second convolution). Its ImageNet weights come
only from a file the user names (torchvision's state-dict format); nothing is downloaded. Without a file the
network keeps fixed random filters, seeded: He, Wang and Hopcroft (NeurIPS 2016) and Ustyuzhaninov et al. (ICLR
2017) report that random-weight networks still capture texture statistics well enough to synthesise textures and
transfer style, with less faithful structure than trained VGG features. The loss network never trains, stays in
eval mode and is held outside the module's parameters, so no checkpoint or logged model carries it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stride.errors import StrideError

# convolutions per block (Simonyan and Zisserman 2015, configurations D and E)
VGG_BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
VGG_WIDTHS = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet weights take images normalised by these
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_WEIGHTS_BYTES = 2 << 30


def layer_names(architecture: str) -> list[str]:
    """`conv1_1`, `conv1_2`, ..., in order."""
    return [f"conv{block + 1}_{conv + 1}" for block, count in enumerate(vgg_blocks(architecture))
            for conv in range(count)]


def vgg_blocks(architecture: str) -> tuple[int, ...]:
    try:
        return VGG_BLOCKS[architecture]
    except KeyError:
        raise StrideError(f"loss network {architecture!r} is not known (known: {', '.join(VGG_BLOCKS)})") from None


def layer_channels(architecture: str, name: str, width: float = 1.0) -> int:
    """How many feature maps layer `name` (e.g. conv3_3) has, without building the network."""
    if name not in layer_names(architecture):
        raise StrideError(f"{architecture} has no layer {name!r} (layers: {', '.join(layer_names(architecture))})")
    return max(1, round(VGG_WIDTHS[int(name[4]) - 1] * width))


def vgg_features(architecture: str, up_to: str, width: float = 1.0) -> tuple[nn.Sequential, dict[str, int]]:
    """torchvision's `features` layout cut after `up_to`'s ReLU, and the index of each named ReLU output.
    `width` scales every layer's channels (random filters only: ImageNet weights exist at width 1)."""
    layers: list[nn.Module] = []
    outputs: dict[str, int] = {}
    channels = 3
    for block, count in enumerate(vgg_blocks(architecture)):
        if block:
            layers.append(nn.MaxPool2d(2, 2))
        for conv in range(count):
            out = layer_channels(architecture, f"conv{block + 1}_{conv + 1}", width)
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
            channels = out
            name = f"conv{block + 1}_{conv + 1}"
            outputs[name] = len(layers) - 1
            if name == up_to:
                return nn.Sequential(*layers), outputs
    raise StrideError(f"{architecture} has no layer {up_to!r} (layers: {', '.join(layer_names(architecture))})")


def load_vgg_weights(features: nn.Sequential, path: str | Path) -> str:
    """Copy torchvision VGG weights (`features.N.weight` keys, or `N.weight` of the features alone) from `path`
    into `features`; the file's sha256. Read with weights_only=True: a state dict is tensors, never code."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise StrideError(f"loss.weights: {file} is not a file (a torchvision VGG state dict, e.g. "
                          "vgg16-397923af.pth, saved where this process can read it)")
    if file.stat().st_size > MAX_WEIGHTS_BYTES:
        raise StrideError(f"loss.weights: {file} is {file.stat().st_size} bytes; a VGG state dict is under 600 MB")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, zip errors, unsupported globals
        raise StrideError(f"loss.weights: {file} is not a weights-only torch state dict ({type(err).__name__}: "
                          f"{err})") from None
    if not isinstance(state, dict):
        raise StrideError(f"loss.weights: {file} holds a {type(state).__name__}, not a state dict")
    prefix = "features." if any(str(key).startswith("features.") for key in state) else ""
    for index, layer in enumerate(features):
        if not isinstance(layer, nn.Conv2d):
            continue
        for name, target in (("weight", layer.weight), ("bias", layer.bias)):
            key = f"{prefix}{index}.{name}"
            value = state.get(key)
            if not isinstance(value, Tensor):
                raise StrideError(f"loss.weights: {file} has no tensor {key!r}; expected torchvision's VGG "
                                  "state dict (features.0.weight, features.0.bias, ...)")
            if target is None or value.shape != target.shape:
                raise StrideError(f"loss.weights: {file}: {key} has shape {list(value.shape)}, the network's "
                                  f"layer takes {list(target.shape) if target is not None else 'none'} (is it "
                                  "the architecture named in loss.network?)")
            with torch.no_grad():
                target.copy_(value.float())
    return digest


def random_filters(features: nn.Sequential, seed: int) -> None:
    """He-normal filters and zero biases from `seed`: every process builds the same stand-in network."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in features:
            if isinstance(layer, nn.Conv2d):
                fan_in = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if layer.bias is not None:
                    layer.bias.zero_()


@dataclass(frozen=True)
class LossNetworkSpec:
    """Which loss network: the architecture, its ImageNet weights file (None: seeded random filters) and, for
    random filters only, a channel multiplier that makes CPU runs cheap."""

    architecture: str = "vgg16"
    weights: str | None = None
    seed: int = 0
    width: float = 1.0

    def describe(self, digest: str | None = None) -> str:
        if self.weights:
            return f"{self.architecture} ImageNet weights from {Path(self.weights).name}" + \
                (f" (sha256 {digest[:12]})" if digest else "")
        width = f", width x{self.width:g}" if self.width != 1 else ""
        return f"{self.architecture} with fixed random filters (seed {self.seed}{width}; no ImageNet weights)"


class LossNetwork(nn.Module):
    """A frozen VGG that returns the named layers' features of [0, 1] RGB images."""

    mean: Tensor  # buffers
    std: Tensor

    def __init__(self, spec: LossNetworkSpec, layers: Iterable[str]):
        super().__init__()
        wanted = list(dict.fromkeys(layers))
        if not wanted:
            raise StrideError("the loss network needs at least one layer")
        order = layer_names(spec.architecture)
        unknown = [name for name in wanted if name not in order]
        if unknown:
            raise StrideError(f"loss layers {unknown} are not layers of {spec.architecture} (layers: "
                              f"{', '.join(order)})")
        if spec.weights and spec.width != 1:
            raise StrideError(f"loss.network_width={spec.width:g} applies to random filters only: ImageNet weights "
                              "come at width 1")
        deepest = max(wanted, key=order.index)
        self.features, indices = vgg_features(spec.architecture, deepest, spec.width)
        self.taps = {indices[name]: name for name in wanted}
        self.spec = spec
        self.weights_sha256 = load_vgg_weights(self.features, spec.weights) if spec.weights else None
        if not spec.weights:
            random_filters(self.features, spec.seed)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> LossNetwork:
        return self  # always in eval mode, whatever a trainer asks of the modules around it

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        x = (images - self.mean) / self.std
        found: dict[str, Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                found[self.taps[index]] = x
        return found

    def description(self) -> str:
        return self.spec.describe(self.weights_sha256)


def gram(features: Tensor) -> Tensor:
    """N x C x C Gram matrices, g_ij = (1/HW) sum_hw f_i f_j (eqs. 5.6 and 5.7)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def content_loss(found: dict[str, Tensor], target: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """Per sample: sum over layers of w/(HWC) * squared feature differences (eq. 5.5)."""
    return torch.stack([w * (found[name] - target[name]).pow(2).flatten(1).mean(1)
                        for name, w in weights.items()]).sum(0)


def style_loss(grams: dict[str, Tensor], targets: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """Per sample: sum over layers of w/C^2 * squared Gram differences (eq. 5.8)."""
    return torch.stack([w * (grams[name] - targets[name]).pow(2).flatten(1).mean(1)
                        for name, w in weights.items()]).sum(0)


def total_variation(images: Tensor) -> Tensor:
    """Per sample: squared vertical and horizontal neighbour differences (eq. 5.9, beta = 2), mean per pixel."""
    down = (images[:, :, 1:, :-1] - images[:, :, :-1, :-1]).pow(2)
    right = (images[:, :, :-1, 1:] - images[:, :, :-1, :-1]).pow(2)
    return (down + right).flatten(1).mean(1)


@dataclass
class PerceptualWeights:
    """The weighted layers and the loss terms' weights (lambda_c, lambda_s, lambda_tv of eq. 5.10)."""

    content_layers: dict[str, float]
    style_layers: dict[str, float]
    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 0.0
    layers: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.layers = list(dict.fromkeys([*self.content_layers, *self.style_layers]))


class PerceptualLoss:
    """Eq. 5.10 over one loss network, with the style images' Gram matrices computed once."""

    def __init__(self, network: LossNetwork, weights: PerceptualWeights):
        self.network, self.weights = network, weights

    @torch.no_grad()
    def style_targets(self, styles: Sequence[Tensor]) -> dict[str, Tensor]:
        """S x C x C Gram matrices per style layer, one row per style image (each 3 x H x W in [0, 1], any size)."""
        rows = [{name: gram(f)[0] for name, f in self.network(style[None]).items()
                 if name in self.weights.style_layers} for style in styles]
        return {name: torch.stack([row[name] for row in rows]) for name in self.weights.style_layers}

    def __call__(self, output: Tensor, content: Tensor, targets: dict[str, Tensor],
                 mixture: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(mean total loss, per-sample parts) of stylised `output` against `content`; `mixture` N x S holds each
        sample's style weights (one-hot in training), which blend the style targets."""
        found = self.network(output)
        with torch.no_grad():
            wanted = self.network(content)
        grams = {name: gram(found[name]) for name in self.weights.style_layers}
        blended = {name: torch.einsum("ns,sij->nij", mixture.to(targets[name].dtype), targets[name])
                   for name in self.weights.style_layers}
        parts = {"content": content_loss(found, wanted, self.weights.content_layers),
                 "style": style_loss(grams, blended, self.weights.style_layers),
                 "tv": total_variation(output)}
        w = self.weights
        total = w.content_weight * parts["content"] + w.style_weight * parts["style"] + w.tv_weight * parts["tv"]
        return total.mean(), parts


def resized_for_style(image: Tensor, max_side: int | None) -> Tensor:
    """A 3 x H x W style image scaled (aspect kept) so its longer side is `max_side`: the scale of the patterns
    the network learns follows it (sec. 5.3.2)."""
    if not max_side or max(image.shape[-2:]) == max_side:
        return image
    scale = max_side / max(image.shape[-2:])
    size = [max(1, round(side * scale)) for side in image.shape[-2:]]
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
