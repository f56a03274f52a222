"""Pictures logged next to the numbers: learning curves and confusion matrices."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_learning_curves(history: list[dict[str, float]], path: Path, families: Collection[str] | None = None) -> Path:
    """One panel per metric family (loss, acc), train and val per epoch; `families`: only these panels (a task
    whose other numbers are logged as metrics, not drawn)."""
    if families is not None:
        history = [{k: v for k, v in row.items() if k == "epoch" or k.split("_", 1)[-1] in families}
                   for row in history]
    families = sorted({key.split("_", 1)[1] for row in history for key in row if "_" in key and key != "epoch"})
    fig, axes = plt.subplots(1, max(1, len(families)), figsize=(5 * max(1, len(families)), 3.6), squeeze=False)
    for axis, family in zip(axes[0], families):
        for split in ("train", "val"):
            points = [(row["epoch"], row[f"{split}_{family}"]) for row in history if f"{split}_{family}" in row]
            if points:
                axis.plot(*zip(*points), marker="o", label=split)
        axis.set_xlabel("epoch")
        axis.set_title(family)
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: Path, title: str = "") -> Path:
    matrix = np.asarray(matrix)
    size = max(4.0, 0.45 * len(class_names) + 2)
    fig, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        axis.text(col, row, str(int(count)), ha="center", va="center", fontsize=8,
                  color="white" if count > threshold else "black")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    axis.set_title(f"{title} accuracy {accuracy:.2%}".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
