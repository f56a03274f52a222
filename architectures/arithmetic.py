"""Convolution arithmetic (docs/models.md, C): the output size every builder uses to size its flattened features."""

from __future__ import annotations

from stride.errors import StrideError


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """floor((n + 2p - f) / s) + 1, the lecture notes' formula (the CUDA thesis: floor((n - f + 2p)/s) + 1),
    with a dilated kernel's span d(f - 1) + 1 as f.

    Pooling windows follow the same rule (torch's default floor mode).
    """
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def check_spatial(architecture: str, input_shape: tuple[int, ...], height: int, width: int) -> None:
    """Refuse an input too small for the network's convolutions and pools, naming the input shape."""
    if height < 1 or width < 1:
        raise StrideError(f"architecture {architecture!r}: input shape {tuple(input_shape)} is too small "
                          f"(its feature maps shrink to {height}x{width})")


def units_for_depth(depth: int, step: int, offset: int, what: str) -> int:
    """n from depth = step * n + offset (ResNets, WRNs, DenseNets count their layers so), or a
    StrideError naming model.depth and the allowed depths."""
    n, rest = divmod(depth - offset, step)
    if rest or n < 1:
        allowed = ", ".join(str(step * k + offset) for k in range(1, 6))
        raise StrideError(f"model.depth: {depth} is not the depth of a {what}; allowed: {step}n+{offset} "
                          f"({allowed}, ...)")
    return n
