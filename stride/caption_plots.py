"""The sample-caption page: images with the caption a model wrote and the references beside it."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SHOWN_REFERENCES = 2
WRAP = 38  # characters per line under each image


def plot_captions(images: list[np.ndarray], generated: list[str], references: list[list[str]], path: Path,
                  title: str = "", columns: int = 4) -> Path:
    """A grid of H x W x 3 uint8 images, each with its generated caption (bold) and its first references."""
    rows = max(1, math.ceil(len(images) / columns))
    # room under each image for its references (text outside the axes, which tight_layout ignores)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 4.9 * rows), squeeze=False,
                             gridspec_kw={"hspace": 0.75, "wspace": 0.08})
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= len(images):
            continue
        axis.imshow(images[index], interpolation="nearest")
        shown = textwrap.fill(f"model: {generated[index] or '(empty)'}", WRAP)
        axis.set_title(shown, fontsize=8, fontweight="bold", loc="left")
        wrapped = [textwrap.fill(f"ref: {r}", WRAP) for r in references[index][:SHOWN_REFERENCES]]
        axis.text(0, -0.04, "\n".join(wrapped), transform=axis.transAxes, fontsize=7, va="top", color="#333333")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
