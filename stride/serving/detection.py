"""Serving face detectors (docs/models.md, A3): K best boxes per letterboxed image out, WIDER-protocol AP on a split
(all faces and the official Easy/Medium/Hard subsets), the official per-image prediction files, and boxes in each
file's own pixels for `stride predict`, drawn on the file with `--out`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from stride.architectures.face_detector import DetectionExport
from stride.datamodules.detection import DetectionData, letterbox_scale
from stride.detection_plots import plot_precision_recall
from stride.errors import StrideError
from stride.lightning_modules.detection import DetectionModule
from stride.metrics.detection_ap import wider_face_ap, write_prediction_files
from stride.names import inside, safe_filename
from stride.serving.base import DEFAULT_MAX_PIXELS, Evaluation, ExportedModel, Serving, TensorSpec, register_serving
from stride.serving.image_input import image_size, read_image
from stride.tasks import DataFacts
from stride.tasks.detection import SUBSETS, found_boxes, true_boxes
from stride.text_table import align_columns

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pytorch_lightning as pl

    from stride.datamodules.sharded import ShardedDataModule


@dataclass
class FacesFound:
    file: str
    boxes: list[tuple[float, float, float, float, float]]  # x1, y1, x2, y2, score in the file's pixels
    picture: str | None = None  # the image with the boxes drawn (`stride predict --out`)

    def as_dict(self) -> dict[str, Any]:
        found = {"file": self.file, "faces": [{"box": [round(v, 1) for v in b[:4]], "score": round(b[4], 4)}
                                              for b in self.boxes]}
        return found if self.picture is None else {**found, "picture": self.picture}



class DetectionServing(Serving):
    task = "detection"

    def export(self, module: pl.LightningModule, facts: DataFacts) -> ExportedModel:
        assert isinstance(module, DetectionModule)  # the detection task's module
        exported = DetectionExport(module.network).cpu().eval()
        return ExportedModel(exported, TensorSpec(tuple(facts.input_shape)),
                             TensorSpec((exported.max_detections, 5)))

    @torch.no_grad()
    def evaluate(self, network: nn.Module, data: ShardedDataModule, split: str, model: str) -> Evaluation:
        """Every image of `split` once; AP over all faces and, where recorded, the official subsets."""
        assert isinstance(data, DetectionData)  # the detection task's evaluation_data
        predictions: list[np.ndarray] = []
        annotations: list[dict[str, Any]] = []
        for batch in data.loader(split):
            inputs, targets = data.on_after_batch_transfer(batch, 0)
            rows = network(inputs.float())
            if rows.ndim != 3 or rows.shape[-1] != 5:
                raise StrideError(f"model {model} returns shape {list(rows.shape)}, not N x K x 5 detections")
            for found, target in zip(rows.cpu().numpy(), targets):
                predictions.append(found_boxes(found, float(target["scale"])))
                annotations.append(target["annotation"])
        truths = [true_boxes(a) for a in annotations]
        curves = {"all": wider_face_ap(predictions, [t for t, _ in truths], [k for _, k in truths])}
        if annotations and all("subsets" in a for a in annotations):
            for subset in SUBSETS:
                curves[subset] = wider_face_ap(predictions, [t for t, _ in truths],
                                               [np.asarray(a["subsets"][subset], dtype=bool) for a in annotations])
        metrics = {f"{split}_ap": curves["all"].ap}
        metrics.update({f"{split}_ap_{name}": c.ap for name, c in curves.items() if name != "all"})
        metrics[f"{split}_samples"] = float(len(annotations))
        return Evaluation(split, metrics, len(annotations), data.root.absolute_uri, data.dataset_sha256,
                          details={"curves": {n: (c.recall, c.precision, c.ap) for n, c in curves.items()},
                                   "predictions": {a["file"]: p for a, p in zip(annotations, predictions)}})

    def evaluation_figures(self, evaluation: Evaluation, folder: Path, title: str) -> list[Path]:
        return [plot_precision_recall(evaluation.details["curves"],
                                      folder / f"precision_recall_{safe_filename(evaluation.split)}.png",
                                      title=f"{title} {evaluation.split}")]

    def write_predictions(self, evaluation: Evaluation, folder: Path) -> list[Path]:
        """The per-image files the official WIDER FACE tools read (`<event>/<name>.txt`)."""
        return write_prediction_files(folder, evaluation.details["predictions"])

    def read_input(self, path: Path, inputs: TensorSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """An image letterboxed into the model's square exactly as evaluation letterboxes it."""
        width, height = image_size(path, max_pixels)
        side = inputs.shape[-1]
        scale = letterbox_scale(height, width, side)
        fitted = (max(1, round(height * scale)), max(1, round(width * scale)))
        pixels = read_image(path, (3, *fitted), max_pixels)
        canvas = np.zeros(inputs.shape, dtype=np.float32)
        canvas[:, :fitted[0], :fitted[1]] = pixels
        return canvas

    def predictions(self, outputs: np.ndarray, files: list[str], labels: list[str], top_k: int,
                    inputs: TensorSpec | None = None) -> list[FacesFound]:
        """Boxes in each file's own pixels (`top_k` is not a limit here: every face found is listed)."""
        if inputs is None:
            raise StrideError("detection predictions need the model's input shape to undo the letterbox")
        rows = []
        for file, found in zip(files, outputs):
            width, height = image_size(Path(file), DEFAULT_MAX_PIXELS)
            boxes = found_boxes(found, letterbox_scale(height, width, inputs.shape[-1]))
            rows.append(FacesFound(file, [(float(x1), float(y1), float(x2), float(y2), float(score))
                                          for x1, y1, x2, y2, score in boxes]))
        return rows

    def prediction_table(self, rows: list[FacesFound]) -> str:
        lines = [("file", "faces", "boxes (x1 y1 x2 y2 score)")]
        for row in rows:
            shown = "  ".join(f"[{b[0]:.0f} {b[1]:.0f} {b[2]:.0f} {b[3]:.0f} {b[4]:.2f}]" for b in row.boxes)
            lines.append((row.file, str(len(row.boxes)), shown or "-"))
        table = align_columns(lines)
        pictures = [row.picture for row in rows if row.picture]
        return table + (f"\nboxes drawn: {', '.join(pictures)}" if pictures else "")

    def draw_predictions(self, rows: list[FacesFound], folder: Path) -> list[Path]:
        """Each file as `<folder>/<its stem>_faces.png` with its boxes and scores drawn, in its own pixels
        (files are read once more here: they were checked and letterboxed before predicting)."""
        folder.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for row in rows:
            stem = safe_filename(Path(row.file).stem)
            path = inside(folder, folder / f"{stem}_faces.png")
            if path in written:  # two files of one name from different folders: both kept
                path = inside(folder, folder / f"{stem}_{len(written)}_faces.png")
            drawn = draw_boxes(own_pixels(Path(row.file)), row.boxes)
            drawn.save(path)
            row.picture = str(path)
            written.append(path)
        return written


def draw_boxes(image: Image.Image, boxes: list[tuple[float, float, float, float, float]]) -> Image.Image:
    """Red boxes with their scores above them; line width grows with the image."""
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 300))
    for x1, y1, x2, y2, score in boxes:
        draw.rectangle((x1, y1, x2, y2), outline=(230, 30, 30), width=width)
        draw.text((x1, max(0, y1 - 11)), f"{score:.2f}", fill=(230, 30, 30))
    return image


def own_pixels(path: Path) -> Image.Image:
    """The file as the 8-bit RGB picture the network saw, at its own size (read as `read_input` reads it)."""
    width, height = image_size(path, DEFAULT_MAX_PIXELS)
    pixels = read_image(path, (3, height, width), DEFAULT_MAX_PIXELS)
    return Image.fromarray(np.round(pixels.transpose(1, 2, 0) * 255).astype(np.uint8))



register_serving(DetectionServing())
