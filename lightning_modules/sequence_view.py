"""Images as sequences (docs/models.md, A2): pixels in row-major order, optionally permuted.

Folded into the network like normalisation, so the permutation is one buffer shared by
train, val, test and the exported model, which therefore takes ordinary images.
"""

from __future__ import annotations

import torch
from torch import nn


def pixel_permutation(length: int, seed: int) -> torch.Tensor:
    """The fixed permutation of permuted MNIST, reproducible from its seed."""
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed))


class SequenceView(nn.Module):
    """N x C x H x W -> N x C x (H*W), in row-major or a fixed permuted order."""

    order: torch.Tensor  # buffer

    def __init__(self, length: int, permutation_seed: int | None = None):
        super().__init__()
        self.permuted = permutation_seed is not None
        order = pixel_permutation(length, permutation_seed) if permutation_seed is not None else torch.arange(length)
        self.register_buffer("order", order)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        sequence = images.flatten(2)
        return sequence.index_select(2, self.order) if self.permuted else sequence
