"""The stylization figure people look at: each style beside the content images it stylised (docs/stylization.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

import stride.plots  # noqa: F401  (chooses matplotlib's Agg backend)


def picture(image: Tensor | np.ndarray) -> np.ndarray:
    """A 3 x H x W [0, 1] tensor/array (or H x W x 3 uint8) as H x W x 3 floats for imshow."""
    array = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    return np.clip(array.transpose(1, 2, 0), 0, 1)


def plot_style_grid(styles: list, contents: list, results: list[list], names: list[str], path: Path,
                    title: str = "") -> Path:
    """Row 0: the content images; row 1 + s: style s, then each content image in that style."""
    import matplotlib.pyplot as plt

    rows, columns = 1 + len(styles), 1 + len(contents)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.2 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    axes[0][0].text(0.5, 0.5, "style \\ content", ha="center", va="center", fontsize=9)
    for column, content in enumerate(contents, start=1):
        axes[0][column].imshow(picture(content))
    for row, (style, name) in enumerate(zip(styles, names), start=1):
        axes[row][0].imshow(picture(style))
        axes[row][0].set_title(name, fontsize=9)
        for column, result in enumerate(results[row - 1], start=1):
            axes[row][column].imshow(picture(result))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
