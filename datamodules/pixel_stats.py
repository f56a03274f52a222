"""Per-channel mean and std of uint8 pixels on the [0, 1] scale, accumulated image by image or chunk by chunk.

The sums are integers, so they are exact whatever the order, and nothing larger than one
chunk is ever converted to floats (a whole training split as float64 is 8 times its size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PixelSums:
    total: np.ndarray  # int64 per channel
    squares: np.ndarray  # int64 per channel
    count: int = 0  # pixels per channel

    @classmethod
    def empty(cls, channels: int = 3) -> PixelSums:
        return cls(np.zeros(channels, np.int64), np.zeros(channels, np.int64))

    def add(self, pixels: np.ndarray, channel_axis: int) -> None:
        """Add uint8 `pixels` whose channels run along `channel_axis`."""
        axes = tuple(axis for axis in range(pixels.ndim) if axis != channel_axis % pixels.ndim)
        self.total += pixels.sum(axis=axes, dtype=np.int64)
        self.squares += np.square(pixels, dtype=np.int64).sum(axis=axes)
        self.count += pixels.size // pixels.shape[channel_axis]

    def merge(self, other: PixelSums) -> None:
        self.total += other.total
        self.squares += other.squares
        self.count += other.count

    def stats(self) -> dict[str, list[float]]:
        count = max(self.count, 1)
        mean = self.total / count / 255
        std = np.sqrt(np.maximum(self.squares / count / 255**2 - mean**2, 0))
        return {"mean": mean.round(6).tolist(), "std": std.round(6).tolist()}
