"""Predicting on files with any logged or registered model; reading and showing is the task's business."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from stride.errors import StrideError
from stride.registry.client import connect
from stride.registry.references import ModelReference, class_names, describe_model, load_network
from stride.tasks import TensorSpec, get_task
from stride.tasks.base import DEFAULT_MAX_PIXELS


def check_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise StrideError(f"{path}: is a folder; give the files in it (e.g. {path}/*.png)")
    if not path.is_file():
        raise StrideError(f"{path}: no such file")
    return path


@torch.no_grad()
def predict_files(model_uri: str, files: list[str | Path], top_k: int = 3, tracking_uri: str | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[Any], str]:
    """Load `model_uri` once, read every file (all checked before predicting); return the rows and their table."""
    if not files:
        raise StrideError("give at least one file to predict on")
    client = connect(tracking_uri)
    ref: ModelReference = describe_model(client, model_uri)
    task = get_task(ref.task)
    inputs = np.stack([task.read_input(check_file(f), TensorSpec(ref.input_shape), max_pixels=max_pixels)
                       for f in files])
    outputs = load_network(ref)(torch.from_numpy(inputs)).numpy()
    rows = task.predictions(outputs, [str(f) for f in files], class_names(client, ref), top_k,
                            inputs=TensorSpec(ref.input_shape))
    return rows, task.prediction_table(rows)
