"""Anchor boxes of a one-shot detector and the box offsets relative to them (docs/models.md, A3).

Every pyramid level of stride 2^level places the same few anchors at the centre of each of
its cells: `scales` sizes (the square root of the anchor's area) times the aspect ratios w/h.
The sizes of all levels together are spaced geometrically from the smallest to the largest
anchor, so FaceNet v1.0's 16..406 px over 5 levels and 3 scales per level are exactly
16, 32, 64, 128, 256 x {1, 2^(1/3), 2^(2/3)}, and the Swedish variant's 14..220 px spreads
12 sizes over P3-P6. Boxes are x1, y1, x2, y2 pixels throughout (torchvision's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# torchvision's clamp of the predicted log-scale: no box grows more than 1000/16 times its anchor
MAX_LOG_SCALE = math.log(1000.0 / 16)


def level_sizes(smallest_px: float, largest_px: float, levels: int, scales_per_level: int) -> list[list[float]]:
    """Anchor sizes per level, geometrically spaced from `smallest_px` to `largest_px` over all levels."""
    count = levels * scales_per_level
    step = (largest_px / smallest_px) ** (1 / (count - 1)) if count > 1 else 1.0
    sizes = [smallest_px * step ** i for i in range(count)]
    return [sizes[i * scales_per_level:(i + 1) * scales_per_level] for i in range(levels)]


def cell_anchors(sizes: list[float], aspect_ratios: list[float]) -> Tensor:
    """(len(sizes) * len(aspect_ratios), 4) boxes centred on 0: for each size, each ratio w/h of area size^2."""
    boxes = []
    for size in sizes:
        for ratio in aspect_ratios:
            half_w, half_h = size * math.sqrt(ratio) / 2, size / math.sqrt(ratio) / 2
            boxes.append([-half_w, -half_h, half_w, half_h])
    return torch.tensor(boxes, dtype=torch.float32)


def feature_size(pixels: int, stride: int) -> int:
    """Cells of a level along one side: every stride-2 step of a ResNet (padded convs, max-pool) rounds up."""
    return -(-pixels // stride)


@dataclass(frozen=True)
class AnchorGrid:
    """The anchors of every level of one pyramid, in the order the heads predict them:
    level by level (finest first), row by row, cell by cell, then the cell's anchors."""

    strides: tuple[int, ...]
    sizes: tuple[tuple[float, ...], ...]  # per level
    aspect_ratios: tuple[float, ...]  # width / height

    @property
    def per_location(self) -> int:
        return len(self.sizes[0]) * len(self.aspect_ratios)

    def level_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        return [(feature_size(height, s), feature_size(width, s)) for s in self.strides]

    def boxes(self, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
        """(A, 4) anchors for an image of height x width pixels."""
        levels = []
        for stride, sizes, (rows, cols) in zip(self.strides, self.sizes, self.level_shapes(height, width)):
            cell = cell_anchors(list(sizes), list(self.aspect_ratios)).to(device)
            ys = (torch.arange(rows, device=device, dtype=torch.float32) + 0.5) * stride
            xs = (torch.arange(cols, device=device, dtype=torch.float32) + 0.5) * stride
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
            levels.append((centres + cell).reshape(-1, 4))
        return torch.cat(levels)


@dataclass(frozen=True)
class BoxCoder:
    """RetinaNet's (Faster R-CNN's) offsets of a box from its anchor: centre shifts in anchor widths
    and heights, log size ratios, each multiplied by its weight (docs/models.md, A3: the seed leaves
    the parameterisation open)."""

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        wx, wy, ww, wh = self.weights
        aw, ah, ax, ay = _centre_form(anchors)
        bw, bh, bx, by = _centre_form(boxes)
        return torch.stack([wx * (bx - ax) / aw, wy * (by - ay) / ah,
                            ww * torch.log(bw / aw), wh * torch.log(bh / ah)], dim=-1)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        wx, wy, ww, wh = self.weights
        aw, ah, ax, ay = _centre_form(anchors)
        cx = deltas[..., 0] / wx * aw + ax
        cy = deltas[..., 1] / wy * ah + ay
        half_w = torch.exp((deltas[..., 2] / ww).clamp(max=MAX_LOG_SCALE)) * aw / 2
        half_h = torch.exp((deltas[..., 3] / wh).clamp(max=MAX_LOG_SCALE)) * ah / 2
        return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


def _centre_form(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return width, height, boxes[..., 0] + width / 2, boxes[..., 1] + height / 2
