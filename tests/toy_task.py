"""A task stride does not ship, defined here and nowhere else: regression of one number from a feature vector.

It proves a new task is purely additive (tests/test_plugin_task.py): its own data options
(`data.input_noise`), datamodule, LightningModule, quality metric (`mse`, lower is better),
architecture and serving code, loaded as a plugin through $STRIDE_PLUGINS, with no file under
the package edited. It is deliberately small; it reuses stride's base classes, as a real plugin would.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from stride.architectures import build, register
from stride.config.loading import config_to_dict
from stride.config.schema import DataConfig, StrideConfig
from stride.datamodules.sharded import ShardedDataModule
from stride.datamodules.streaming import stack_batch
from stride.datamodules.writer import ShardWriter
from stride.lightning_modules.base import StrideModule
from stride.plots import plot_learning_curves
from stride.serving.base import DEFAULT_MAX_PIXELS, Evaluation, ExportedModel, Serving, TensorSpec, register_serving
from stride.serving.classification import read_array
from stride.tasks.base import DataFacts, Task, datamodule_arguments, register_task
from stride.text_table import align_columns

TASK = "toy_regression"
FEATURES = 4
WEIGHTS = np.array([1.5, -2.0, 0.5, 1.0], dtype=np.float32)  # the target is a linear function of the features


def write_dataset(out: Path, samples: int = 600, seed: int = 0) -> Path:
    """Real shards in stride's format: `x.npy` features, `y.json` target, 60/20/20 train/val/test."""
    rng = np.random.default_rng(seed)
    with ShardWriter(out, samples_per_shard=100) as writer:
        for index in range(samples):
            x = rng.normal(size=FEATURES).astype(np.float32)
            y = float(x @ WEIGHTS + rng.normal(scale=0.05))
            buffer = io.BytesIO()
            np.save(buffer, x, allow_pickle=False)
            split = "train" if index < 0.6 * samples else "val" if index < 0.8 * samples else "test"
            writer.add(split, f"{index:06d}", {"npy": buffer.getvalue(), "json": json.dumps(y).encode()})
        writer.commit(dataset="toy-linear", task=TASK, source={"generator": "tests/toy_task.py", "seed": seed},
                      parameters={"samples": samples, "seed": seed}, class_names=["target"],
                      sample_schema={"npy": {"role": "features", "shape": [FEATURES], "dtype": "float32"},
                                     "json": {"role": "target", "dtype": "float"}})
    return out


# -- data -----------------------------------------------------------------------------------------------
class ToyDataOptions(DataConfig):
    input_noise: float = Field(0.0, ge=0)  # Gaussian noise added to training features (an augmentation)


class ToyConfig(StrideConfig):
    task: Literal["toy_regression"] = "toy_regression"
    data: ToyDataOptions


def features_and_targets(samples: list[tuple[Any, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
    features, targets = stack_batch(samples)
    return features.float(), targets.float()


class ToyData(ShardedDataModule):
    task = TASK
    fields = ("npy", "json")
    collate = staticmethod(features_and_targets)

    def __init__(self, path: Any, *, input_noise: float = 0.0, **kwargs: Any):
        super().__init__(path, **kwargs)
        self.input_noise = input_noise

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest.sample_schema["npy"]["shape"])

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        features, targets = batch
        trainer = getattr(self, "trainer", None)
        if self.input_noise and trainer is not None and trainer.training:
            features = features + self.input_noise * torch.randn_like(features)
        return features, targets


# -- training -------------------------------------------------------------------------------------------
class ToyModule(StrideModule):
    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        features, targets = batch
        predicted = self(features).squeeze(-1)
        loss = F.mse_loss(predicted, targets)
        self.log_mean(f"{split}_loss", loss, len(targets))
        self.log_mean(f"{split}_mse", loss, len(targets))
        self.log_mean(f"{split}_mae", (predicted - targets).abs().mean(), len(targets))
        if split == "train":
            self.log_step_loss(loss)
        return loss


@register("toy_mlp", task=TASK)
def toy_mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 16) -> nn.Module:
    """A one-hidden-layer perceptron from features to `num_classes` outputs (here one number)."""
    return nn.Sequential(nn.Linear(input_shape[0], hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


class ToyTask(Task):
    name = TASK
    config_class = ToyConfig
    dataset_tasks = (TASK,)
    quality = "mse"
    quality_mode = "min"
    reported = ("mae",)

    def datamodule(self, config: StrideConfig, **overrides: Any) -> ShardedDataModule:
        assert isinstance(config.data, ToyDataOptions)
        return ToyData(config.data.path, input_noise=config.data.input_noise,
                       **{**datamodule_arguments(config), **overrides})

    def module(self, config: StrideConfig, facts: DataFacts) -> ToyModule:
        network = build(config.model.architecture, input_shape=facts.input_shape, num_classes=1,
                        **config.model.params)
        return ToyModule(network, config.optim, config.schedule,
                         description={"config": config_to_dict(config), "data": facts.as_dict()})

    def figures(self, module: Any, facts: DataFacts, history: list[dict[str, float]], folder: Path,
                title: str) -> list[Path]:
        return [plot_learning_curves(history, folder / "learning_curves.png")] if history else []

    def batch_loss(self, network: nn.Module, batch: Any, forward: Any = None) -> torch.Tensor:
        features, targets = batch
        return F.mse_loss((forward or network)(features).squeeze(-1), targets)

    def evaluation_data(self, path: str | Path, input_shape: tuple[int, ...] | None = None) -> ShardedDataModule:
        return ToyData(path, batch_size=256, num_workers=0, pin_memory=False, normalize="none")


# -- serving --------------------------------------------------------------------------------------------
class ToyServing(Serving):
    task = TASK

    def export(self, module: Any, facts: DataFacts) -> ExportedModel:
        return ExportedModel(module.network.cpu().eval(), TensorSpec(tuple(facts.input_shape)), TensorSpec((1,)))

    @torch.no_grad()
    def evaluate(self, network: nn.Module, data: ShardedDataModule, split: str, model: str) -> Evaluation:
        squared = absolute = 0.0
        samples = 0
        for features, targets in data.loader(split):
            predicted = network(features).squeeze(-1)
            squared += float(((predicted - targets) ** 2).sum())
            absolute += float((predicted - targets).abs().sum())
            samples += len(targets)
        metrics = {f"{split}_mse": squared / max(1, samples), f"{split}_mae": absolute / max(1, samples),
                   f"{split}_samples": float(samples)}
        return Evaluation(split, metrics, samples, str(Path(data.root).absolute()), data.dataset_sha256)

    def evaluation_figures(self, evaluation: Evaluation, folder: Path, title: str) -> list[Path]:
        return []

    def read_input(self, path: Path, inputs: TensorSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        return read_array(path, inputs.shape)

    def predictions(self, outputs: np.ndarray, files: list[str], labels: list[str], top_k: int,
                    inputs: TensorSpec | None = None) -> list[Any]:
        return [ToyPrediction(file, float(value[0])) for file, value in zip(files, outputs)]

    def prediction_table(self, rows: list[Any]) -> str:
        return align_columns([("file", "prediction"), *((r.file, f"{r.value:.4f}") for r in rows)])


class ToyPrediction:
    def __init__(self, file: str, value: float):
        self.file, self.value = file, value

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "prediction": self.value}


register_task(ToyTask())
register_serving(ToyServing())


if __name__ == "__main__":  # `python tests/toy_task.py OUT`: write the toy dataset to OUT
    import sys

    write_dataset(Path(sys.argv[1]))
