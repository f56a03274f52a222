"""Predicting on files with any logged or registered model; reading and showing is the task's business."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from stride.errors import StrideError
from stride.registry.client import connect
from stride.registry.references import ModelReference, class_names, describe_model, download_module, load_network
from stride.serving import DEFAULT_MAX_PIXELS, TensorSpec, get_serving


def check_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise StrideError(f"{path}: is a folder; give the files in it (e.g. {path}/*.png)")
    if not path.is_file():
        raise StrideError(f"{path}: no such file")
    return path


@torch.no_grad()
def predict_files(model_uri: str, files: list[str | Path], top_k: int = 3, tracking_uri: str | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS, decoding: dict[str, Any] | None = None,
                  pictures: str | Path | None = None) -> tuple[list[Any], str]:
    """Load `model_uri` once, read every file (all checked before predicting); return the rows and their table.

    `decoding` (e.g. {"beam_size": 3}): options the logged model fixes, so the network is rebuilt from
    the weights-only checkpoint its run logged beside it; `pictures`: a folder for the task's drawings.
    """
    if not files:
        raise StrideError("give at least one file to predict on")
    client = connect(tracking_uri)
    ref: ModelReference = describe_model(client, model_uri)
    serving = get_serving(ref.task)
    inputs = [serving.read_input(check_file(f), TensorSpec(ref.input_shape), max_pixels=max_pixels) for f in files]
    labels = class_names(client, ref)
    if decoding:
        network = rebuilt_decoder(client, ref, decoding)
    else:
        network = load_network(ref)
    outputs = serving.run(network, inputs)
    rows = serving.predictions(outputs, [str(f) for f in files], labels, top_k, inputs=TensorSpec(ref.input_shape))
    if pictures is not None:
        serving.draw_predictions(rows, Path(pictures))
    return rows, serving.prediction_table(rows)


def rebuilt_decoder(client, ref: ModelReference, decoding: dict[str, Any]) -> torch.nn.Module:
    """The task's eager decoder over the weights logged with `ref`'s run (read with weights_only=True)."""
    from stride.training.checkpoints import load_module

    with tempfile.TemporaryDirectory() as tmp:
        _, module = load_module(download_module(client, ref, Path(tmp)))
    return get_serving(ref.task).decoder(module, **decoding)
