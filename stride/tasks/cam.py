"""Class activation maps, batched: the maps, upsampled to the input, normalised, and their boxes.

docs/models.md, D (sec. 5.1 of the NiN/DenseNet study; Zhou et al. 2016): for a head whose
scores are a global average of class maps (`stride.architectures.heads`), the map of class j
is m_j = sum_i w_ji f_i + b_j, the linear layer as a 1x1 convolution over the last feature
maps (eq. 5.3), upsampled bilinearly to the input. A weakly supervised box is the smallest
box around the map's pixels above a threshold (sec. 5.1.1). `plot_test_split_cams` draws the
picture a training run logs: test images classified right, and mistakes with the maps of both
the predicted and the true class (sec. 5.1.2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from stride.architectures.arithmetic import conv_output_size
from stride.architectures.heads import CamHead, evaluation_mode, find_cam_head
from stride.cam_plots import CamPanel, plot_cam_panels
from stride.errors import StrideError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pytorch_lightning as pl

    from stride.datamodules.sharded import ShardedDataModule
    from stride.tasks.base import DataFacts

log = logging.getLogger(__name__)

# The study boxes "all activations above such threshold" without giving it; Zhou et al. 2016 (sec. 3.1)
# keep the pixels above 20% of the map's maximum. stride applies it to the min-max normalised map.
DEFAULT_THRESHOLD = 0.2
GRID_FILE = "class_activation_maps_test.png"
GRID_COLUMNS = 6  # images per row of the training run's grid
GRID_SCANNED_SAMPLES = 2048  # test samples looked at, at most, to find that many right and wrong


@dataclass
class Explanation:
    """CAMs of chosen classes for a batch: N images, k classes each."""

    probabilities: torch.Tensor  # N x classes, the network's softmax
    classes: torch.Tensor  # N x k, the classes explained
    maps: torch.Tensor  # N x k x H x W in [0, 1], at the input's resolution
    boxes: torch.Tensor  # N x k x 4: x0, y0, x1, y1, inclusive input pixels


@torch.no_grad()
def class_maps(head: CamHead, inputs: torch.Tensor) -> torch.Tensor:
    """N x classes x h x w maps whose spatial means are the network's scores."""
    return _maps_of(head, head.features_and_scores(inputs)[0])


def _maps_of(head: CamHead, features: torch.Tensor) -> torch.Tensor:
    conv = head.class_conv
    if conv is None:
        return features
    if features.dim() != 4 or features.shape[1] != conv.in_channels:
        raise StrideError(f"the head found ({head.where}) reads feature maps of shape {list(features.shape[1:])} but "
                          f"its classifier takes {conv.in_channels} channels (an average pool that does not cover "
                          "the whole map?); no class activation maps")
    if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0):
        return conv(features)  # eq. 5.3: the 1x1 conv sharing the linear layer's weights
    return _spread_class_conv(conv, features)


def _spread_class_conv(conv: nn.Conv2d, features: torch.Tensor) -> torch.Tensor:
    """A k x k class conv followed by GAP is still linear in its input f: c_j = sum_iuv f_iuv g_jiuv + b_j,
    where g averages, over the conv's output positions, the kernel taps that read (u, v), i.e. the
    transposed conv of a constant. m_j = hw sum_i f_i g_ji + b_j keeps GAP(m_j) = c_j at the input's
    finer resolution (for a 1x1 kernel it is the conv's output itself)."""
    height, width = features.shape[-2:]
    assert isinstance(conv.padding, tuple)  # find_cam_head keeps no class conv padded by "same" or "valid"
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    out_h, out_w = conv_output_size(height, kh, sh, ph, dh), conv_output_size(width, kw, sw, pw, dw)
    classes = conv.out_channels
    constant = torch.eye(classes, dtype=features.dtype, device=features.device)[:, :, None, None]
    constant = constant.expand(classes, classes, out_h, out_w) / (out_h * out_w)
    taps = F.conv_transpose2d(constant, conv.weight, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    # rows and columns past the last output's reach are read by nothing: their taps are zero
    taps = F.pad(taps, (0, width - taps.shape[-1], 0, height - taps.shape[-2]))
    maps = height * width * torch.einsum("nchw,kchw->nkhw", features, taps)
    return maps if conv.bias is None else maps + conv.bias[None, :, None, None]


def _check_reproduces(maps: torch.Tensor, logits: torch.Tensor, head: CamHead) -> None:
    """The maps' means must be the scores: the finder read the graph, this checks its arithmetic."""
    scale = 1.0 + float(logits.abs().max()) if logits.numel() else 1.0
    if maps.dim() != 4 or maps.shape[:2] != logits.shape or \
            not torch.allclose(maps.mean((2, 3)), logits, rtol=1e-3, atol=1e-4 * scale):
        raise StrideError(f"the head found ({head.where}) does not reproduce the network's scores on these inputs "
                          "(an average pool that does not cover the whole feature map?); no class activation maps")


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each map min-max scaled to [0, 1]; a flat map (nothing stands out) becomes all ones."""
    low = maps.amin((-2, -1), keepdim=True)
    span = maps.amax((-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.ones_like(maps))


def check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        raise StrideError(f"threshold {threshold} must be in (0, 1]: a fraction of the normalised map")


def threshold_boxes(maps: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """The smallest box around the pixels >= `threshold` of each normalised map (sec. 5.1.1): ... x 4 as
    (x0, y0, x1, y1), inclusive. A normalised map reaches 1, so every box holds at least one pixel."""
    check_threshold(threshold)
    above = maps >= threshold
    rows, columns = above.any(-1).int(), above.any(-2).int()  # ... x H, ... x W

    def first_and_last(hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return hits.argmax(-1), hits.shape[-1] - 1 - hits.flip(-1).argmax(-1)

    (y0, y1), (x0, x1) = first_and_last(rows), first_and_last(columns)
    return torch.stack([x0, y0, x1, y1], -1)


@torch.no_grad()
def scores_and_maps(head: CamHead, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's class probabilities and every class's map (one pass), checked to average to its scores."""
    features, logits = head.features_and_scores(inputs)
    maps = _maps_of(head, features)
    _check_reproduces(maps, logits, head)
    return logits.softmax(1), maps


def localise(probabilities: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor, size: tuple[int, int],
             threshold: float = DEFAULT_THRESHOLD) -> Explanation:
    """The maps of `classes` (N x k) upsampled bilinearly to `size` (as in the study), normalised, boxed."""
    classes = classes.to(maps.device)
    chosen = maps.gather(1, classes[:, :, None, None].expand(-1, -1, *maps.shape[-2:]))
    upsampled = normalise(F.interpolate(chosen, size=size, mode="bilinear", align_corners=False))
    return Explanation(probabilities.cpu(), classes.cpu(), upsampled.cpu(), threshold_boxes(upsampled, threshold).cpu())


@torch.no_grad()
def explain(head: CamHead, inputs: torch.Tensor, *, top_k: int = 1,
            threshold: float = DEFAULT_THRESHOLD) -> Explanation:
    """CAMs of each image's `top_k` most probable classes; `head` is the network's `find_cam_head`, and the
    network is in evaluation mode (`evaluation_mode`)."""
    probabilities, maps = scores_and_maps(head, inputs)
    top = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1).indices
    height, width = inputs.shape[-2:]
    return localise(probabilities, maps, top, (height, width), threshold)


# -- the grid a training run logs ------------------------------------------------------------------
def plot_test_split_cams(module: pl.LightningModule, open_data: Callable[[str], ShardedDataModule],
                         facts: DataFacts, folder: Path, title: str,
                         threshold: float = DEFAULT_THRESHOLD) -> list[Path]:
    """`[folder/GRID_FILE]`: the first test images classified right (CAM of their class) and the first
    mistakes (CAM of the predicted class, then of the true one, sec. 5.1.2); [] when the network has no
    CAM head or its inputs are not images."""
    data_path = (module.hparams.get("stride") or {}).get("config", {}).get("data", {}).get("path")
    if data_path is None or len(facts.input_shape) != 3:
        return []
    try:
        network = module.network
        assert isinstance(network, nn.Module)  # a stride module holds its network
        return _plot_test_split_cams(network, open_data(data_path), facts, folder / GRID_FILE, title, threshold)
    except StrideError as err:
        log.info("no class activation maps for this run: %s", err)
    except Exception as err:  # a picture must never cost a finished training its logged model
        log.warning("class activation maps of the test split not drawn: %r", err)
    return []


def _plot_test_split_cams(network: nn.Module, data: ShardedDataModule, facts: DataFacts, path: Path,
                          title: str, threshold: float) -> list[Path]:
    head = find_cam_head(network)  # the network's head, in evaluation mode
    parameter = next(network.parameters())  # inputs as the weights are: 64-true trains in float64
    names = list(facts.class_names) or [str(i) for i in range(facts.num_classes)]
    right: list[CamPanel] = []
    wrong: list[tuple[CamPanel, CamPanel]] = []
    scanned = 0
    with evaluation_mode(network), torch.no_grad():
        for batch in data.loader("test"):
            images, labels = data.on_after_batch_transfer(batch, 0)
            images = images.to(parameter.device, parameter.dtype)
            probabilities, maps = scores_and_maps(head, images)
            predicted = probabilities.argmax(1).cpu()
            seen = localise(probabilities, maps, torch.stack([predicted, labels], 1), images.shape[-2:], threshold)
            for index, (guess, truth) in enumerate(zip(predicted.tolist(), labels.tolist())):
                confidence = f"{seen.probabilities[index, guess]:.2f}"
                if guess == truth and len(right) < GRID_COLUMNS:
                    right.append(_panel(seen, images, index, 0, f"{names[truth]} ({confidence})"))
                elif guess != truth and len(wrong) < GRID_COLUMNS:
                    wrong.append((_panel(seen, images, index, 0, f"{names[truth]} as {names[guess]} ({confidence})"),
                                  _panel(seen, images, index, 1, f"CAM of {names[truth]} "
                                                                 f"({seen.probabilities[index, truth]:.2f})")))
            scanned += len(labels)
            if (len(right) == GRID_COLUMNS and len(wrong) == GRID_COLUMNS) or scanned >= GRID_SCANNED_SAMPLES:
                break
    rows = [("right", right), ("wrong: predicted class", [p for p, _ in wrong]),
            ("wrong: true class", [t for _, t in wrong])]
    if not right and not wrong:  # an empty test split
        return []
    return [plot_cam_panels([row for row in rows if row[1]], path,
                            f"{title}: class activation maps of test images (threshold {threshold:g})")]


def _panel(seen: Explanation, images: torch.Tensor, index: int, which: int, title: str) -> CamPanel:
    return CamPanel(images[index].cpu().numpy(), seen.maps[index, which].numpy(),
                    tuple(seen.boxes[index, which].tolist()), title)
