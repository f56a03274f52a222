"""Serving image and sequence classifiers: class probabilities out, accuracy and a confusion matrix on a split,
ranked classes per file for `stride predict`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from stride.datamodules.sharded import ShardedDataModule
from stride.errors import StrideError
from stride.lightning_modules.classification import ClassificationModule
from stride.names import safe_filename
from stride.plots import plot_confusion_matrix
from stride.serving.base import DEFAULT_MAX_PIXELS, Evaluation, ExportedModel, Serving, TensorSpec, register_serving
from stride.serving.image_input import is_image_file, read_image, unsupported_file
from stride.tasks import DataFacts
from stride.text_table import align_columns

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pytorch_lightning as pl


@dataclass
class Prediction:
    file: str
    label: str
    probability: float
    top_k: list[tuple[str, float]]

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "class": self.label, "probability": self.probability,
                "top_k": [{"class": name, "probability": p} for name, p in self.top_k]}


def read_image_or_array(path: Path, shape: tuple[int, ...], max_pixels: int) -> np.ndarray:
    """An image file converted as the training data were, or a `.npy` array of the model's input shape."""
    if path.suffix.lower() == ".npy":
        return read_array(path, shape)
    if is_image_file(path):
        return read_image(path, shape, max_pixels)
    raise unsupported_file(path, (".npy",))


def read_array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise StrideError(f"{path}: not a readable .npy array without pickled objects ({err})") from None
    if tuple(array.shape) != tuple(shape):
        raise StrideError(f"{path}: array has shape {list(array.shape)}, the model expects {list(shape)}")
    if not np.issubdtype(array.dtype, np.number):
        raise StrideError(f"{path}: array dtype {array.dtype} is not numeric")
    if not np.isfinite(array).all():
        raise StrideError(f"{path}: array holds {np.count_nonzero(~np.isfinite(array))} NaN or infinite values; "
                          "the model takes finite numbers")
    return array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)



class ClassificationServing(Serving):
    task = "classification"

    def export(self, module: pl.LightningModule, facts: DataFacts) -> ExportedModel:
        """Logits -> class probabilities, what predict and evaluate consume."""
        assert isinstance(module, ClassificationModule)  # the classification tasks' module
        network = nn.Sequential(module.network, nn.Softmax(dim=1)).cpu().eval()
        return ExportedModel(network, TensorSpec(tuple(facts.input_shape)), TensorSpec((facts.num_classes,)))

    @torch.no_grad()
    def evaluate(self, network: nn.Module, data: ShardedDataModule, split: str, model: str) -> Evaluation:
        """Stream `split` once through a probability-output network: accuracy, loss, confusion matrix."""
        num_classes = data.num_classes
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        total_loss = 0.0
        for batch in data.loader(split):
            inputs, labels = data.on_after_batch_transfer(batch, 0)  # e.g. uint8 -> [0, 1], no augmentation
            probabilities = network(inputs.float())
            if probabilities.shape[-1] != num_classes:
                raise StrideError(f"model {model} predicts {probabilities.shape[-1]} classes, dataset {data.root} "
                                  f"has {num_classes}")
            picked = probabilities.gather(1, labels[:, None]).squeeze(1)
            total_loss += float(-torch.log(picked.clamp_min(1e-12)).sum())
            np.add.at(confusion, (labels.numpy(), probabilities.argmax(1).numpy()), 1)
        samples = int(confusion.sum())
        metrics = {f"{split}_acc": float(np.trace(confusion)) / max(1, samples),
                   f"{split}_loss": total_loss / max(1, samples), f"{split}_samples": float(samples)}
        return Evaluation(split, metrics, samples, data.root.absolute_uri, data.dataset_sha256,
                          details={"confusion_matrix": confusion, "class_names": list(data.manifest.class_names)})

    def evaluation_figures(self, evaluation: Evaluation, folder: Path, title: str) -> list[Path]:
        return [plot_confusion_matrix(evaluation.details["confusion_matrix"], evaluation.details["class_names"],
                                      folder / f"confusion_matrix_{safe_filename(evaluation.split)}.png",
                                      title=f"{title} {evaluation.split}")]

    def read_input(self, path: Path, inputs: TensorSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Images of any size converted as the training data were (grey or RGB, resized bilinearly to the
        model's H x W, scaled to [0, 1] by their bit depth: stride.serving.image_input); `.npy` arrays of the
        model's input shape (uint8 scaled by 1/255 like stored image shards, finite floats used as they are)."""
        return read_image_or_array(path, inputs.shape, max_pixels)

    def predictions(self, outputs: np.ndarray, files: list[str], labels: list[str], top_k: int,
                    inputs: TensorSpec | None = None) -> list[Prediction]:
        rows = []
        for file, probs in zip(files, outputs):
            order = np.argsort(-probs)[:max(1, top_k)]
            ranked = [(labels[i] if i < len(labels) else str(i), float(probs[i])) for i in order]
            rows.append(Prediction(file, ranked[0][0], ranked[0][1], ranked))
        return rows

    def prediction_table(self, rows: list[Prediction]) -> str:
        header = ("file", "class", "probability", "top-k")
        return align_columns([header, *((r.file, r.label, f"{r.probability:.4f}",
                                         "  ".join(f"{n}:{p:.3f}" for n, p in r.top_k)) for r in rows)])


class SequenceClassificationServing(ClassificationServing):
    """Sequences are served as classifications are: `.npy` arrays or images read as the network's input."""

    task = "sequence_classification"


register_serving(ClassificationServing())
register_serving(SequenceClassificationServing())
