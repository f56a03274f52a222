"""Evaluating a logged model on one split of a stride dataset, every sample exactly once.

The model evaluated is the logged MLflow model itself (what the registry serves), fed the
batches the training datamodule makes, so the numbers are comparable with the run's own
`test_acc`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stride.datamodules.image_classification import ImageClassificationData, ShardedDataModule
from stride.datamodules.manifest import manifest_sha256, read_manifest
from stride.datamodules.sequence_classification import SequenceClassificationData
from stride.errors import StrideError

EVAL_BATCH_SIZE = 256


@dataclass
class EvaluationResult:
    accuracy: float
    loss: float  # mean cross-entropy of the predicted probabilities
    samples: int
    confusion_matrix: np.ndarray  # [true, predicted] counts
    class_names: list[str]
    dataset_path: str
    dataset_sha256: str
    split: str

    def metrics(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{self.split}_acc": self.accuracy, f"{prefix}{self.split}_loss": self.loss,
                f"{prefix}{self.split}_samples": float(self.samples)}

    def summary(self) -> str:
        return f"accuracy {self.accuracy:.4f}, loss {self.loss:.4f} on {self.samples} {self.split} samples"


def open_dataset(path: str | Path) -> ShardedDataModule:
    """The datamodule that reads this dataset as training did (image or sequence shards)."""
    kwargs = dict(batch_size=EVAL_BATCH_SIZE, num_workers=0, pin_memory=False)
    if read_manifest(path).task == "sequence_classification":
        return SequenceClassificationData(path, **kwargs)
    return ImageClassificationData(path, **kwargs)


def check_dataset_identity(path: str | Path, expected_sha256: str | None, run_id: str) -> str:
    """The dataset's manifest sha256, if it is the one the run was trained on; else a StrideError."""
    actual = manifest_sha256(Path(path))
    if expected_sha256 and actual != expected_sha256:
        raise StrideError(f"dataset {path} has manifest sha256 {actual[:12]}..., but run {run_id} was trained on "
                          f"{expected_sha256[:12]}... (dataset.manifest_sha256); point --data at the dataset the "
                          "run used")
    return actual


def check_input_shape(model_shape: tuple[int, ...], data: ShardedDataModule, model_uri: str) -> None:
    if tuple(model_shape) != tuple(data.input_shape):
        raise StrideError(f"model {model_uri} takes inputs of shape {list(model_shape)}, but dataset {data.root} "
                          f"holds samples of shape {list(data.input_shape)}")


@torch.no_grad()
def evaluate_network(network: torch.nn.Module, data: ShardedDataModule, split: str = "test",
                     model_uri: str = "model", input_shape: tuple[int, ...] | None = None) -> EvaluationResult:
    """Stream `split` once through a probability-output network; accuracy, loss, confusion matrix."""
    if input_shape is not None:
        check_input_shape(input_shape, data, model_uri)
    data.setup("test")  # verifies shard sizes and checksums
    num_classes = data.num_classes
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    total_loss = 0.0
    for batch in data.loader(split):
        inputs, labels = data.on_after_batch_transfer(batch, 0)  # e.g. uint8 -> [0, 1], no augmentation
        probabilities = network(inputs.float())
        if probabilities.shape[-1] != num_classes:
            raise StrideError(f"model {model_uri} predicts {probabilities.shape[-1]} classes, dataset {data.root} "
                              f"has {num_classes}")
        picked = probabilities.gather(1, labels[:, None]).squeeze(1)
        total_loss += float(-torch.log(picked.clamp_min(1e-12)).sum())
        np.add.at(confusion, (labels.numpy(), probabilities.argmax(1).numpy()), 1)
    samples = int(confusion.sum())
    expected = data.manifest.split(split).num_samples
    if samples != expected:
        raise StrideError(f"{data.root}: evaluated {samples} {split} samples, the manifest lists {expected}")
    return EvaluationResult(accuracy=float(np.trace(confusion)) / max(1, samples), loss=total_loss / max(1, samples),
                            samples=samples, confusion_matrix=confusion, class_names=list(data.manifest.class_names),
                            dataset_path=str(Path(data.root).absolute()), dataset_sha256=data.dataset_sha256,
                            split=split)
