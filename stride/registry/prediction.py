"""Predicting on files: images of any size converted as the training data were, or `.npy` arrays.

Images become what the dataset stored, scaled to [0, 1]: grayscale (mode L) for one
channel or RGB for three, resized bilinearly to the model's H x W (how the built-in digits
were made), channels first. `.npy` files must already have the model's input shape;
uint8 arrays are scaled by 1/255 like stored image shards, floats are used as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from stride.errors import StrideError
from stride.registry.client import connect
from stride.registry.references import ModelReference, class_names, describe_model, load_network
from stride.text_table import align_columns

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_MODES = {1: "L", 3: "RGB"}


@dataclass
class Prediction:
    file: str
    label: str
    probability: float
    top_k: list[tuple[str, float]]

    def as_dict(self) -> dict:
        return {"file": self.file, "class": self.label, "probability": self.probability,
                "top_k": [{"class": name, "probability": p} for name, p in self.top_k]}


def read_image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) != 3 or shape[0] not in IMAGE_MODES:
        raise StrideError(f"{path}: the model takes inputs of shape {list(shape)}, not images (1 or 3 x H x W); "
                          "give a .npy array of that shape")
    channels, height, width = shape
    try:
        with Image.open(path) as image:
            converted = image.convert(IMAGE_MODES[channels]).resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise StrideError(f"{path}: not a readable PNG/JPEG image ({err})") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def read_array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise StrideError(f"{path}: not a readable .npy array without pickled objects ({err})") from None
    if tuple(array.shape) != tuple(shape):
        raise StrideError(f"{path}: array has shape {list(array.shape)}, the model expects {list(shape)}")
    if not np.issubdtype(array.dtype, np.number):
        raise StrideError(f"{path}: array dtype {array.dtype} is not numeric")
    return array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)


def read_input(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise StrideError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return read_array(path, shape)
    if suffix in IMAGE_SUFFIXES:
        return read_image(path, shape)
    raise StrideError(f"{path}: unsupported file type {suffix or '(none)'} (use .png, .jpg, .jpeg or .npy)")


@torch.no_grad()
def predict_arrays(network: torch.nn.Module, inputs: np.ndarray, names: list[str], files: list[str],
                   top_k: int) -> list[Prediction]:
    probabilities = network(torch.from_numpy(inputs)).numpy()
    rows = []
    for file, probs in zip(files, probabilities):
        order = np.argsort(-probs)[:max(1, top_k)]
        ranked = [(names[i] if i < len(names) else str(i), float(probs[i])) for i in order]
        rows.append(Prediction(file, ranked[0][0], ranked[0][1], ranked))
    return rows


def predict_files(model_uri: str, files: list[str | Path], top_k: int = 3,
                  tracking_uri: str | None = None) -> list[Prediction]:
    """Load `model_uri` once, read every file (all checked before predicting), return one row per file."""
    if not files:
        raise StrideError("give at least one file to predict on")
    client = connect(tracking_uri)
    ref: ModelReference = describe_model(client, model_uri)
    inputs = np.stack([read_input(f, ref.input_shape) for f in files])
    return predict_arrays(load_network(ref), inputs, class_names(client, ref), [str(f) for f in files], top_k)


def format_table(rows: list[Prediction]) -> str:
    header = ("file", "class", "probability", "top-k")
    return align_columns([header, *((r.file, r.label, f"{r.probability:.4f}",
                                     "  ".join(f"{n}:{p:.3f}" for n, p in r.top_k)) for r in rows)])
