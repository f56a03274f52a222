"""SVHN, the cropped-digits version (Netzer et al. 2011), from its official MATLAB files.

`train_32x32.mat`, `test_32x32.mat` and the optional `extra_32x32.mat`
(http://ufldl.stanford.edu/housenumbers/) each hold `X`, 32 x 32 x 3 x N uint8 (height, width,
RGB, image), and `y`, N x 1 labels 1..10 where 10 stands for the digit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stride.datamodules.image_shards import deterministic_split, write_image_classification
from stride.datamodules.manifest import Manifest
from stride.datamodules.memory_budget import check_fits
from stride.datamodules.sources.mat_headers import mat_variables
from stride.errors import StrideError

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
SIDE_PX = 32
EXPECTED = "exactly the variables X (32 x 32 x 3 x N uint8) and y (N x 1 labels 1..10, 10 for the digit 0)"


def read_mat(path: Path, budget_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x 3 x 32 x 32, labels 0..9) of one official file, if its variables fit the memory budget."""
    from scipy.io import loadmat

    if not path.is_file():
        raise StrideError(f"{path}: missing; expected the official SVHN files {', '.join(FILES.values())} "
                          "(extra optional)")
    variables = mat_variables(path)
    check_fits(str(path), sum(v.decoded_bytes for v in variables), ", ".join(map(str, variables)), budget_bytes)
    try:
        mat = loadmat(path)
    except Exception as err:  # scipy raises ValueError, OSError, IndexError, ... on damaged or non-MATLAB files
        raise StrideError(f"{path}: cannot read as a MATLAB v5 file ({type(err).__name__}: {err}); is the download "
                          "complete and undamaged?") from None
    names = sorted(key for key in mat if not key.startswith("__"))
    if names != ["X", "y"]:
        raise StrideError(f"{path}: holds the variables {', '.join(names) or 'none'}; expected {EXPECTED}")
    images, labels = mat["X"], mat["y"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (SIDE_PX, SIDE_PX, 3):
        raise StrideError(f"{path}: X is {images.dtype} of shape {images.shape}; expected {EXPECTED}")
    if labels.shape != (images.shape[3], 1) or labels.dtype.kind not in "iuf":
        raise StrideError(f"{path}: y is {labels.dtype} of shape {labels.shape} for {images.shape[3]} images; "
                          f"expected {EXPECTED}")
    labels = labels[:, 0]
    if labels.size and not (np.isin(labels, np.arange(1, 11))).all():
        bad = labels[~np.isin(labels, np.arange(1, 11))][0]
        raise StrideError(f"{path}: label {bad} out of range 1..10 (10 stands for the digit 0)")
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels.astype(np.int64) % 10


def download(root: Path, splits: list[str]) -> None:
    """Fetch the official files with torchvision (needs network); they are read from `root` afterwards."""
    from torchvision.datasets import SVHN
    from torchvision.datasets.utils import download_url

    for split in splits:
        url, filename, md5 = SVHN.split_list[split]
        download_url(url, str(root), filename, md5)


def prepare_svhn(source: str | Path, out_dir: str | Path, *, val_size: int = 6000, extra: bool = False, seed: int = 0,
                 encoding: str = "png", samples_per_shard: int = 5000, overwrite: bool = False,
                 fetch: bool = False) -> Manifest:
    """Validation comes from the official training file only; `extra` joins the training split."""
    source = Path(source)
    used = ["train", "test", *(["extra"] if extra else [])]
    if fetch:
        source.mkdir(parents=True, exist_ok=True)
        download(source, used)
    if not source.is_dir():
        raise StrideError(f"--source {source} is not a folder (expected one holding {', '.join(FILES.values())})")
    train_images, train_labels = read_mat(source / FILES["train"])
    test_images, test_labels = read_mat(source / FILES["test"])
    if not 0 < val_size < len(train_labels):
        raise StrideError(f"--val-size must be between 1 and {len(train_labels) - 1}, got {val_size}")
    train, val = deterministic_split(len(train_labels), val_size, seed)
    splits = {"train": (train_images[train], train_labels[train]), "val": (train_images[val], train_labels[val]),
              "test": (test_images, test_labels)}
    if extra:
        extra_images, extra_labels = read_mat(source / FILES["extra"])
        splits["train"] = (np.concatenate([splits["train"][0], extra_images]),
                           np.concatenate([splits["train"][1], extra_labels]))
    return write_image_classification(
        out_dir, dataset="svhn", splits=splits, class_names=[str(d) for d in range(10)],
        source={"kind": "svhn-mat", "folder": str(source.absolute()), "files": [FILES[s] for s in used],
                "label_10_is": 0},
        parameters={"val_size": val_size, "extra": extra, "seed": seed, "encoding": encoding,
                    "samples_per_shard": samples_per_shard},
        encoding=encoding, samples_per_shard=samples_per_shard, overwrite=overwrite)
