"""Pictures of a detector: its boxes drawn on images beside the true ones, and precision-recall curves."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

PREDICTED_COLOUR = "#e4572e"
TRUE_COLOUR = "#29bf12"


def plot_detections(images: list[np.ndarray], predicted: list[np.ndarray], true: list[np.ndarray], path: Path,
                    titles: list[str] | None = None, title: str = "", columns: int = 4) -> Path:
    """A grid of H x W x 3 uint8 images with true boxes (green) and predicted (k, 5) boxes + scores (red),
    all x1, y1, x2, y2 in the images' pixels."""
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= len(images):
            continue
        axis.imshow(images[index])
        for x1, y1, x2, y2 in np.asarray(true[index]).reshape(-1, 4):
            axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=TRUE_COLOUR, linewidth=1.2))
        for x1, y1, x2, y2, score in np.asarray(predicted[index]).reshape(-1, 5):
            axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=PREDICTED_COLOUR,
                                     linewidth=1.2, linestyle="--"))
            axis.text(x1, y1 - 1, f"{score:.2f}", color=PREDICTED_COLOUR, fontsize=6, va="bottom")
        label = titles[index] if titles else ""
        axis.set_title(f"{label} ({len(np.asarray(predicted[index]).reshape(-1, 5))} found, "
                       f"{len(np.asarray(true[index]).reshape(-1, 4))} true)", fontsize=7)
    fig.suptitle(f"{title}  (green: true, red dashed: predicted)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_precision_recall(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path,
                          title: str = "") -> Path:
    """One curve per subset: name -> (recall, precision, AP)."""
    fig, axis = plt.subplots(figsize=(4.6, 4))
    for name, (recall, precision, ap) in curves.items():
        axis.plot(recall, precision, label=f"{name} AP {ap:.3f}")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
