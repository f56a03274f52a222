"""Batched augmentation on whatever device the batch is on (one kernel per batch, not per image)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, max_shift_px: int) -> torch.Tensor:
    """Translate each image by its own random integer offset in [-max, max] px, filling with zeros."""
    if max_shift_px <= 0:
        return images
    batch, _, height, width = images.shape
    shifts = torch.randint(-max_shift_px, max_shift_px + 1, (batch, 2), device=images.device).to(images.dtype)
    theta = torch.zeros(batch, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * shifts[:, 0] / width  # affine_grid works in [-1, 1] coordinates
    theta[:, 1, 2] = -2 * shifts[:, 1] / height
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def random_horizontal_flip(images: torch.Tensor, probability: float = 0.5) -> torch.Tensor:
    flip = torch.rand(images.shape[0], device=images.device) < probability
    return torch.where(flip[:, None, None, None], images.flip(-1), images)
