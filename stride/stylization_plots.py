"""The stylization figures people look at (docs/stylization.md): each style beside the content images it stylised,
and an iterative transfer's loss curves and its content | style | result."""

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


def plot_step_curves(history: list[dict[str, float]], parts: dict[str, str], path: Path) -> Path:
    """One panel per loss part (history key -> title) against the step, on a log scale where values allow it."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(parts), figsize=(4 * len(parts), 3.2), squeeze=False)
    steps = [row["step"] for row in history]
    for axis, (part, title) in zip(axes[0], parts.items()):
        values = [row[part] for row in history]
        axis.plot(steps, values)
        if min(values) > 0:
            axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_side_by_side(panels: list[tuple[Tensor | np.ndarray, str]], path: Path) -> Path:
    """Images in one row, each with its title."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3), squeeze=False)
    for axis, (image, title) in zip(axes[0], panels):
        axis.imshow(picture(image))
        axis.set_title(title[:40], fontsize=9)
        axis.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
