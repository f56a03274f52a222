"""Class activation map overlays: the image, its heat map and the weakly supervised box.

One drawing for both pictures stride makes: `stride explain`'s one row per image (the image,
then its top classes) and a training run's grid of test images (docs/explain.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

PANEL_INCHES = 1.8
MARGIN_INCHES = 0.6  # room for the figure's title and the rows' labels
HEAT_ALPHA = 0.45


@dataclass
class CamPanel:
    image: np.ndarray  # C x H x W in [0, 1], as the network reads it
    cam: np.ndarray | None  # H x W in [0, 1]; None shows the image alone
    box: tuple[int, int, int, int] | None  # x0, y0, x1, y1, inclusive pixels
    title: str


def overlay(image: np.ndarray, cam: np.ndarray | None) -> np.ndarray:
    """H x W x 3: the image in grey or colour, blended with the map in the jet colour map."""
    pixels = np.clip(image, 0, 1)
    pixels = np.repeat(pixels[0][..., None], 3, -1) if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    if cam is None:
        return pixels
    blended = (1 - HEAT_ALPHA) * pixels + HEAT_ALPHA * colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    return np.clip(blended, 0, 1)  # rounding may step past 1, which imshow warns about


def draw_cam(axis: plt.Axes, panel: CamPanel) -> None:
    axis.imshow(overlay(panel.image, panel.cam), interpolation="nearest")  # one image: cheap to render
    if panel.box is not None:
        x0, y0, x1, y1 = panel.box  # pixel centres are integers: the box encloses whole pixels
        axis.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, edgecolor="white",
                                 linewidth=1.5))
    axis.set_title(panel.title, fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])


def plot_cam_panels(rows: list[tuple[str, list[CamPanel]]], path: Path, title: str = "") -> Path:
    """One row of panels per (label, panels), the label written left of the row."""
    columns = max(len(panels) for _, panels in rows)
    width, height = PANEL_INCHES * columns + MARGIN_INCHES, PANEL_INCHES * len(rows) + MARGIN_INCHES
    fig, axes = plt.subplots(len(rows), columns, squeeze=False, figsize=(width, height))
    # fixed margins instead of tight_layout, which renders the figure once more to measure it
    fig.subplots_adjust(left=MARGIN_INCHES / 2 / width, right=1 - 0.1 / width, bottom=0.1 / height,
                        top=1 - MARGIN_INCHES / height, wspace=0.1, hspace=0.35)
    for (label, panels), row in zip(rows, axes):
        for axis in row[len(panels):]:
            axis.set_axis_off()
        for axis, panel in zip(row, panels):
            draw_cam(axis, panel)
        row[0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
