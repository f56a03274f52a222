"""Serving embedding models (docs/embedding.md): same or different for pairs of images, verification numbers on a
dataset's pairs, embeddings of a folder.

The logged model carries its decision rule: for each image it returns D + 2 numbers, the embedding, then the
distance threshold chosen on the validation pairs of the checkpoint kept, then the order of the distance it
applies to (2: Euclidean; 1: L1, for a verification head, whose weights the embedding is already scaled by).
So a registered version and its aliases answer with the threshold they were trained with, and nothing else
has to travel beside the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from stride.datamodules.embedding import EmbeddingData
from stride.datamodules.sharded import ShardedDataModule
from stride.errors import StrideError
from stride.lightning_modules.embedding import EmbeddingModule
from stride.metrics.verification import verification_report
from stride.names import safe_filename
from stride.serving.base import DEFAULT_MAX_PIXELS, Evaluation, ExportedModel, Serving, TensorSpec, register_serving
from stride.serving.classification import read_image_or_array
from stride.tasks import DataFacts
from stride.tasks.embedding import embedding_width, plot_roc
from stride.text_table import align_columns

DISTANCE_NAMES = {1.0: "L1", 2.0: "Euclidean"}


class ServedEmbedding(nn.Module):
    """Embedding (scaled by a verification head's weights), threshold and distance order, per image."""

    rule: Tensor  # buffers
    scale: Tensor

    def __init__(self, network: nn.Module, threshold: float, order: float, scale: Tensor | None):
        super().__init__()
        self.network = network
        self.register_buffer("rule", torch.tensor([threshold, order], dtype=torch.float32))
        self.register_buffer("scale", scale if scale is not None else torch.ones(()))

    def forward(self, images: Tensor) -> Tensor:
        embeddings = self.network(images) * self.scale
        return torch.cat([embeddings, self.rule.expand(embeddings.shape[0], 2).to(embeddings.dtype)], dim=1)


def split_outputs(outputs: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(embeddings N x D, threshold, distance order) from what the logged model returns."""
    if outputs.ndim != 2 or outputs.shape[1] < 3:
        raise StrideError(f"an embedding model returns D + 2 numbers per image; this one returned shape "
                          f"{list(outputs.shape)}")
    return outputs[:, :-2], float(outputs[0, -2]), float(outputs[0, -1])


@dataclass
class Verdict:
    reference: str
    file: str
    distance: float
    threshold: float
    order: float

    @property
    def same(self) -> bool:
        return self.distance <= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "file": self.file, "same": self.same, "distance": self.distance,
                "threshold": self.threshold, "distance_kind": DISTANCE_NAMES.get(self.order, f"L{self.order:g}")}


class EmbeddingServing(Serving):
    task = "embedding"

    def export(self, module: Any, facts: DataFacts) -> ExportedModel:
        assert isinstance(module, EmbeddingModule)  # the embedding task's module
        threshold = float(module.threshold)
        if not math.isfinite(threshold):
            raise StrideError("the embedding module has no verification threshold: it was never validated")
        scale = module.head.weights.detach().cpu() if module.head is not None else None
        network = ServedEmbedding(module.network, threshold, module.distance_order, scale).cpu().eval()
        width = embedding_width(module.network.cpu(), facts.input_shape)
        return ExportedModel(network, TensorSpec(tuple(facts.input_shape)), TensorSpec((width + 2,)))

    @torch.no_grad()
    def evaluate(self, network: nn.Module, data: ShardedDataModule, split: str, model: str) -> Evaluation:
        """Embed every sample of `split` once; the LFW protocol on its pairs, TAR@FAR, top-1, and the accuracy at
        the model's own threshold."""
        if not isinstance(data, EmbeddingData):
            raise StrideError(f"{data.root}: model {model} is an embedding model; evaluate it on an embedding dataset")
        outputs, labels, indices = [], [], []
        for batch in data.loader(split):
            images, identities, keys = data.on_after_batch_transfer(batch, 0)
            outputs.append(network(images.float()).numpy())
            labels.append(identities.numpy())
            indices.append(keys.numpy())
        embeddings, threshold, order = split_outputs(np.concatenate(outputs))
        report = verification_report(embeddings.astype(np.float64), np.concatenate(labels), np.concatenate(indices),
                                     data.verification_pairs(split), order=order, given_threshold=threshold)
        samples = len(embeddings)
        metrics = {**report.metrics(split), f"{split}_pairs": float(report.pairs), f"{split}_samples": float(samples)}
        return Evaluation(split, metrics, samples, data.root.absolute_uri, data.dataset_sha256,
                          details={"roc": report.roc})

    def evaluation_figures(self, evaluation: Evaluation, folder: Path, title: str) -> list[Path]:
        name = safe_filename(evaluation.split)
        return [plot_roc({f"{evaluation.split} pairs": evaluation.details["roc"]}, folder / f"roc_{name}.png",
                         f"{title} {evaluation.split}")]

    def read_input(self, path: Path, inputs: TensorSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Images converted as the training data were (stride.serving.image_input), or `.npy` arrays of the
        model's input shape."""
        return read_image_or_array(path, inputs.shape, max_pixels)

    def predictions(self, outputs: np.ndarray, files: list[str], labels: list[str], top_k: int,
                    inputs: TensorSpec | None = None) -> list[Verdict]:
        """Every file after the first against the first: same identity when their distance is at most the threshold."""
        if len(files) < 2:
            raise StrideError("an embedding model compares images: give two or more files (each is compared with "
                              "the first); `stride embed` writes the embeddings of a folder")
        embeddings, threshold, order = split_outputs(outputs)
        distances = np.linalg.norm(embeddings[1:] - embeddings[0], ord=order, axis=1)
        return [Verdict(files[0], file, float(d), threshold, order) for file, d in zip(files[1:], distances)]

    def prediction_table(self, rows: list[Verdict]) -> str:
        header = ("reference", "file", "verdict", "distance", "threshold")
        return align_columns([header, *((r.reference, r.file, "same" if r.same else "different", f"{r.distance:.4f}",
                                         f"{r.threshold:.4f} ({DISTANCE_NAMES.get(r.order, r.order)})")
                                        for r in rows)])


register_serving(EmbeddingServing())
