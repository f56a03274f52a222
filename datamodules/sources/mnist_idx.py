"""MNIST-format datasets (MNIST, Fashion-MNIST, KMNIST) from their official IDX files.

The files are read exactly as distributed (`train-images-idx3-ubyte`, `train-labels-idx1-
ubyte`, `t10k-*`, gzipped or not) from the source folder, its `raw/` subfolder, or the
`<Name>/raw/` layout that torchvision's readers download into (`download=True` uses them
when online). Every defect is reported with the file and what was expected.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from stride.datamodules.image_shards import deterministic_split, write_image_classification
from stride.datamodules.manifest import Manifest
from stride.datamodules.memory_budget import check_fits
from stride.errors import StrideError

IDX_UBYTE = 0x08
IMAGES_MAGIC = 0x00000803  # ubyte, 3 dimensions
LABELS_MAGIC = 0x00000801  # ubyte, 1 dimension
MAX_CHECKED_BYTES = 64 << 20  # checked past a bad header; the largest official file inflates to 47 MB

DATASETS = {
    "mnist": ("MNIST", [str(d) for d in range(10)]),
    "fashion-mnist": ("FashionMNIST", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                       "Sneaker", "Bag", "Ankle boot"]),
    "kmnist": ("KMNIST", ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]),
}
FILES = {("train", "images"): "train-images-idx3-ubyte", ("train", "labels"): "train-labels-idx1-ubyte",
         ("test", "images"): "t10k-images-idx3-ubyte", ("test", "labels"): "t10k-labels-idx1-ubyte"}


class _ByteStream(Protocol):
    """What the readers need of a plain or gzipped file."""

    def read(self, size: int = -1, /) -> bytes: ...


def find_idx_file(source: Path, stem: str, torchvision_name: str) -> Path:
    candidates = [folder / name for folder in (source, source / "raw", source / torchvision_name / "raw")
                  for name in (stem, f"{stem}.gz")]
    if found := next((candidate for candidate in candidates if candidate.is_file()), None):
        return found
    if other := next((candidate for candidate in candidates if candidate.exists()), None):
        raise StrideError(f"{other}: is a folder or special file, not the IDX file {stem} (or {stem}.gz)")
    raise StrideError(f"{source}: missing {stem} (or {stem}.gz); expected the official IDX files "
                      f"{', '.join(FILES.values())}")


def read_idx(path: Path, expected_magic: int, budget_bytes: int | None = None) -> np.ndarray:
    """The array of an IDX file, gzipped or not; never more than its header declares is inflated or read."""
    try:
        with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as stream:
            try:
                dims = _read_header(stream, path, expected_magic)
            except StrideError:
                _drain(stream, MAX_CHECKED_BYTES)  # a damaged .gz is called damaged, not named by its garbage
                raise
            expected = math.prod(dims)  # Python integers: 2**32 - 1 cubed is not 12884901887
            declared = f"{' x '.join(map(str, dims))} = {expected:,} bytes of data"
            check_fits(str(path), expected, f"the header's {declared}", budget_bytes)
            raw = stream.read(expected + 1)  # one byte more tells a padded file from a complete one
    except (OSError, EOFError, zlib.error) as err:  # zlib.error: a corrupt deflate stream inside the .gz
        raise StrideError(f"{path}: cannot read ({err}); is the download complete and undamaged?") from None
    if len(raw) != expected:
        found = f"{len(raw):,}" if len(raw) < expected else "more (the rest is not read)"
        raise StrideError(f"{path}: truncated or padded: header says {declared}, found {found}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def _drain(stream: _ByteStream, limit_bytes: int) -> None:
    """Read on (and discard) up to `limit_bytes`, so that a corrupt deflate stream or checksum shows."""
    while limit_bytes > 0 and (chunk := stream.read(min(limit_bytes, 1 << 20))):
        limit_bytes -= len(chunk)


def _read_header(stream: _ByteStream, path: Path, expected_magic: int) -> tuple[int, ...]:
    start = stream.read(4)
    if len(start) < 4:
        raise StrideError(f"{path}: truncated: {len(start)} bytes, not even an IDX header")
    magic = struct.unpack(">I", start)[0]
    if magic != expected_magic:
        raise StrideError(f"{path}: wrong IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
                          f"({'images, 3 dims' if expected_magic == IMAGES_MAGIC else 'labels, 1 dim'})")
    ndim = magic & 0xFF
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise StrideError(f"{path}: truncated header")
    return struct.unpack(f">{ndim}I", sizes)


def read_split(source: Path, split: str, torchvision_name: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images_path = find_idx_file(source, FILES[(split, "images")], torchvision_name)
    labels_path = find_idx_file(source, FILES[(split, "labels")], torchvision_name)
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise StrideError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.size and labels.max() >= num_classes:
        raise StrideError(f"{labels_path}: label {labels.max()} out of range 0..{num_classes - 1}")
    return images[:, None].copy(), labels.astype(np.int64)


def download(dataset: str, root: Path) -> None:
    """Fetch the official files with torchvision's reader (needs network)."""
    import torchvision.datasets as tvd

    reader = getattr(tvd, DATASETS[dataset][0])
    for train in (True, False):
        reader(str(root), train=train, download=True)


def prepare_mnist_like(dataset: str, source: str | Path, out_dir: str | Path, *, val_size: int = 5000, seed: int = 0,
                       encoding: str = "png", samples_per_shard: int = 5000, overwrite: bool = False,
                       fetch: bool = False) -> Manifest:
    if dataset not in DATASETS:
        raise StrideError(f"unknown MNIST-format dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    torchvision_name, class_names = DATASETS[dataset]
    source = Path(source)
    if fetch:
        download(dataset, source)
    if not source.is_dir():
        raise StrideError(f"--source {source} is not a folder")
    train_images, train_labels = read_split(source, "train", torchvision_name, len(class_names))
    test_images, test_labels = read_split(source, "test", torchvision_name, len(class_names))
    if not 0 < val_size < len(train_labels):
        raise StrideError(f"--val-size must be between 1 and {len(train_labels) - 1}, got {val_size}")
    train, val = deterministic_split(len(train_labels), val_size, seed)
    return write_image_classification(
        out_dir, dataset=dataset,
        splits={"train": (train_images[train], train_labels[train]), "val": (train_images[val], train_labels[val]),
                "test": (test_images, test_labels)},
        class_names=class_names,
        source={"kind": "idx", "folder": str(source.absolute()),
                "files": {f"{s}-{k}": find_idx_file(source, n, torchvision_name).name for (s, k), n in FILES.items()}},
        parameters={"val_size": val_size, "seed": seed, "encoding": encoding, "samples_per_shard": samples_per_shard},
        encoding=encoding, samples_per_shard=samples_per_shard, overwrite=overwrite)
