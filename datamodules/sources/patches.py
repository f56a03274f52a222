"""`patches`: a built-in, offline 32 x 32 colour dataset of real pixels, 10 classes.

Each class is one colour photograph that ships inside an installed package (eight from
scikit-image, two from scikit-learn); a sample is a square crop of it at a random position
and scale, resized to 32 x 32, maybe mirrored, with its colours jittered. The task is to
tell which photograph a crop came from.

- Generalisation, not memory: every photograph is cut into vertical bands, train on the
  left, then validation, then test, with a gap between them; a crop lies inside one band,
  so test crops show parts of each photograph that training never saw.
- Not separable by colour: per-crop brightness, contrast, saturation, hue rotation and
  white balance mean that a crop's mean colour says little about its class (a logistic
  regression on mean RGB is far from perfect; docs/datasets.md gives the number), so a
  network has to use texture and shape.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from stride.datamodules.image_shards import write_image_classification
from stride.datamodules.manifest import Manifest
from stride.errors import StrideError

SIDE_PX = 32
SPLITS = ("train", "val", "test")
# Fractions of a photograph's width, left to right: train band, gap, validation band, gap, test band.
BAND_FRACTIONS = {"train": (0.0, 0.58), "val": (0.61, 0.79), "test": (0.82, 1.0)}
CROP_FRACTION = (0.08, 0.22)  # crop side, of the photograph's shorter side (before clipping to its band)
MIN_CROP_PX = 24
JITTER = {"brightness": (0.6, 1.4), "contrast": (0.6, 1.4), "saturation": (0.4, 1.6), "hue_deg": (-60.0, 60.0),
          "channel_gain": (0.8, 1.2)}


@dataclass(frozen=True)
class Photograph:
    name: str  # the class name
    package: str  # the import name of the package that ships the file
    file: str  # inside the package
    loader: str  # the package's own loader of the same pixels, recorded in the manifest
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # top, left, bottom, right (fractions)


PHOTOGRAPHS = (
    Photograph("astronaut", "skimage", "data/astronaut.png", "skimage.data.astronaut()"),
    Photograph("chelsea", "skimage", "data/chelsea.png", "skimage.data.chelsea()"),
    Photograph("coffee", "skimage", "data/coffee.png", "skimage.data.coffee()"),
    Photograph("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", "skimage.data.hubble_deep_field()"),
    Photograph("immunohistochemistry", "skimage", "data/ihc.png", "skimage.data.immunohistochemistry()"),
    Photograph("motorcycle", "skimage", "data/motorcycle_left.png", "skimage.data.stereo_motorcycle()[0]"),
    # the fundus fills a disc on black: keep the square inside it, or black corners would be a class of their own
    Photograph("retina", "skimage", "data/retina.jpg", "skimage.data.retina()", (0.15, 0.15, 0.85, 0.85)),
    Photograph("rocket", "skimage", "data/rocket.jpg", "skimage.data.rocket()"),
    Photograph("china", "sklearn", "datasets/images/china.jpg", "sklearn.datasets.load_sample_image('china.jpg')"),
    Photograph("flower", "sklearn", "datasets/images/flower.jpg", "sklearn.datasets.load_sample_image('flower.jpg')"),
)


PHOTOGRAPH_FORMATS = {".png": "PNG", ".jpg": "JPEG"}


def photograph_path(photograph: Photograph) -> Path:
    """The shipped file, found without importing its package (importing scikit-learn takes seconds)."""
    spec = importlib.util.find_spec(photograph.package)
    if spec is None or not spec.submodule_search_locations:
        raise StrideError(f"the built-in patches dataset needs {photograph.package} installed (for {photograph.file})")
    return Path(spec.submodule_search_locations[0]) / photograph.file


class Patches(NamedTuple):
    images: np.ndarray  # uint8 N x 3 x 32 x 32
    labels: np.ndarray  # int64 N
    boxes: np.ndarray  # int N x 4: left, top, side (pixels of the cropped region) and the class's photograph index


def region_of(photograph: Photograph, image: np.ndarray) -> tuple[int, int, int, int]:
    height, width = image.shape[:2]
    top, left, bottom, right = photograph.region
    return round(top * height), round(left * width), round(bottom * height), round(right * width)


def band_of(region: tuple[int, int, int, int], split: str) -> tuple[int, int]:
    """The columns [start, stop) of the region that `split` crops from."""
    _, left, _, right = region
    start, stop = BAND_FRACTIONS[split]
    return left + round(start * (right - left)), left + round(stop * (right - left))


def crop_boxes(region: tuple[int, int, int, int], split: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random squares (left, top, side) inside the split's band of the region."""
    top, _, bottom, _ = region
    start, stop = band_of(region, split)
    low, high = CROP_FRACTION
    short = min(bottom - top, region[3] - region[1])
    sides = np.minimum(rng.uniform(low, high, count) * short, min(stop - start, bottom - top))
    sides = np.maximum(sides, MIN_CROP_PX).astype(int)
    lefts = start + (rng.random(count) * (stop - start - sides + 1)).astype(int)
    tops = top + (rng.random(count) * (bottom - top - sides + 1)).astype(int)
    return np.stack([lefts, tops, sides], axis=1)


LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights, the Y row of YIQ


def _hue_rotations(angles_deg: np.ndarray) -> np.ndarray:
    """RGB -> RGB matrices that rotate hue about the grey axis (a rotation of YIQ's chroma plane)."""
    to_yiq = np.array([LUMA, [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    cos, sin = np.cos(np.radians(angles_deg)), np.sin(np.radians(angles_deg))
    rotations = np.zeros((len(angles_deg), 3, 3))
    rotations[:, 0, 0] = 1
    rotations[:, 1, 1], rotations[:, 1, 2], rotations[:, 2, 1], rotations[:, 2, 2] = cos, -sin, sin, cos
    return np.linalg.inv(to_yiq) @ rotations @ to_yiq


def jitter_colours(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-crop photometric jitter of uint8 N x H x W x 3 crops (ranges in JITTER).

    In order: rotate hue, scale saturation (blend with luma), scale contrast about the crop's mean
    luma, scale brightness and each channel's gain. All are affine in RGB, so each crop gets one
    3 x 3 matrix and offset: out = D (c S H x + (1 - c) m), with m the mean luma of H x (S keeps luma).
    """
    count = len(pixels)
    draw = {name: rng.uniform(low, high, count) for name, (low, high) in JITTER.items() if name != "channel_gain"}
    gains = rng.uniform(*JITTER["channel_gain"], (count, 3)) * draw["brightness"][:, None]
    hue = _hue_rotations(draw["hue_deg"])
    saturation = draw["saturation"][:, None, None]
    saturate = saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), LUMA)
    contrast = draw["contrast"][:, None]
    x = pixels.reshape(count, -1, 3).astype(np.float32) / 255
    mean_luma = np.einsum("nij,nj,i->n", hue, x.mean(axis=1), LUMA)[:, None]
    matrices = (gains[:, :, None] * contrast[:, :, None] * saturate @ hue).astype(np.float32)
    offsets = (gains * (1 - contrast) * mean_luma).astype(np.float32)
    out = x @ matrices.transpose(0, 2, 1) + offsets[:, None, :]
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8).reshape(pixels.shape)


def make_split(photographs: list[np.ndarray], split: str, size: int, seed: int) -> Patches:
    """`size` crops of one split, the classes as even as `size` allows, in a seeded order."""
    crops, labels, boxes = [], [], []
    for label, (photograph, image) in enumerate(zip(PHOTOGRAPHS, photographs)):
        count = size // len(PHOTOGRAPHS) + (label < size % len(PHOTOGRAPHS))
        rng = np.random.default_rng([seed, SPLITS.index(split), label])
        found = crop_boxes(region_of(photograph, image), split, count, rng)
        flips = rng.random(count) < 0.5
        source = Image.fromarray(image)
        for (left, top, side), flip in zip(found, flips):
            box = (left, top, left + side, top + side)
            crop = source.resize((SIDE_PX, SIDE_PX), Image.Resampling.BILINEAR, box=box)
            crops.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else crop)
        labels.append(np.full(count, label))
        boxes.append(np.column_stack([found, np.full(count, label)]))
    rng = np.random.default_rng([seed, SPLITS.index(split), len(PHOTOGRAPHS)])
    pixels = jitter_colours(np.stack([np.asarray(crop) for crop in crops]), rng)
    order = rng.permutation(size)
    return Patches(pixels.transpose(0, 3, 1, 2)[order], np.concatenate(labels)[order].astype(np.int64),
                   np.concatenate(boxes)[order])


def read_photograph(photograph: Photograph, mode: str) -> Image.Image:
    """The shipped file decoded in `mode`, opened only as the format its name says."""
    path = photograph_path(photograph)
    try:
        with Image.open(path, formats=[PHOTOGRAPH_FORMATS[path.suffix]]) as opened:
            return opened.convert(mode)
    except OSError as err:
        raise StrideError(f"{path}: cannot read the photograph behind {photograph.loader} ({err}); is the "
                          f"installed {photograph.package} complete?") from None


def load_photographs() -> list[np.ndarray]:
    """The photographs' pixels, exactly as their packages' loaders return them (Pillow decodes both)."""
    return [np.asarray(read_photograph(photograph, "RGB")) for photograph in PHOTOGRAPHS]


def make_patches(sizes: dict[str, int], seed: int = 0,
                 photographs: list[np.ndarray] | None = None) -> dict[str, Patches]:
    photographs = photographs or load_photographs()
    return {split: make_split(photographs, split, sizes[split], seed) for split in SPLITS}


def prepare_patches(out_dir: str | Path, *, train_size: int = 5000, val_size: int = 1000, test_size: int = 1000,
                    seed: int = 0, encoding: str = "png", samples_per_shard: int = 5000,
                    overwrite: bool = False) -> Manifest:
    sizes = {"train": train_size, "val": val_size, "test": test_size}
    if min(sizes.values()) < len(PHOTOGRAPHS):
        raise StrideError(f"--train-size, --val-size and --test-size must each be at least {len(PHOTOGRAPHS)} (one "
                          f"crop per class), got {train_size}, {val_size}, {test_size}")
    photographs = load_photographs()
    splits = make_patches(sizes, seed, photographs)
    return write_image_classification(
        out_dir, dataset="patches", splits={split: (p.images, p.labels) for split, p in splits.items()},
        class_names=[photograph.name for photograph in PHOTOGRAPHS],
        source={"kind": "builtin", "built_from": "crops of colour photographs shipped with scikit-image and "
                "scikit-learn; see docs/datasets.md",
                "photographs": [{"class": photograph.name, "package": photograph.package, "file": photograph.file,
                                 "same_pixels_as": photograph.loader,
                                 "size_hw": list(image.shape[:2]), "region_tlbr_px": list(region_of(photograph, image)),
                                 "bands_px": {split: list(band_of(region_of(photograph, image), split))
                                              for split in SPLITS}}
                                for photograph, image in zip(PHOTOGRAPHS, photographs)]},
        parameters={"train_size": train_size, "val_size": val_size, "test_size": test_size, "seed": seed,
                    "side_px": SIDE_PX, "band_fractions": BAND_FRACTIONS, "crop_fraction": CROP_FRACTION,
                    "min_crop_px": MIN_CROP_PX, "jitter": JITTER, "flip": "horizontal, p=0.5",
                    "encoding": encoding, "samples_per_shard": samples_per_shard},
        encoding=encoding, samples_per_shard=samples_per_shard, overwrite=overwrite)
