"""Convolution arithmetic (docs/models.md, C): the output size every builder uses to size its flattened features."""

from __future__ import annotations

from stride.errors import StrideError


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """floor((n + 2p - f) / s) + 1, the lecture notes' formula (the CUDA thesis: floor((n - f + 2p)/s) + 1).

    Pooling windows follow the same rule (torch's default floor mode).
    """
    return (size + 2 * padding - kernel_size) // stride + 1


def check_spatial(architecture: str, input_shape: tuple[int, ...], height: int, width: int) -> None:
    """Refuse an input too small for the network's convolutions and pools, naming the input shape."""
    if height < 1 or width < 1:
        raise StrideError(f"architecture {architecture!r}: input shape {tuple(input_shape)} is too small "
                          f"(its feature maps shrink to {height}x{width})")
