"""`stride data prepare sequences`: a user's labelled sequences (.npz) -> stride shards.

The file holds `x` ([N, T] or [N, C, T]) and `y` ([N] integer labels), split here
deterministically; or explicit `x_train/y_train/x_test/y_test`, with `x_val/y_val` or a
validation set carved out of the training arrays (`--val-fraction`). Optional `class_names`
(a string array). Arrays are read with `allow_pickle=False`. The manifest records only the
settings that shaped the splits.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stride.datamodules.image_shards import deterministic_split
from stride.datamodules.manifest import Manifest
from stride.datamodules.writer import ShardWriter
from stride.errors import StrideError

SPLITS = ("train", "val", "test")


def _as_channels_first(x: np.ndarray, name: str, source: Path) -> np.ndarray:
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3:
        raise StrideError(f"{source}: {name} must have shape [N, T] or [N, C, T], got {list(x.shape)}")
    if not np.issubdtype(x.dtype, np.number):
        raise StrideError(f"{source}: {name} must be numeric, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise StrideError(f"{source}: {name} contains NaN or infinite values")
    return x.astype(np.float32)


def _labels(y: np.ndarray, count: int, name: str, source: Path) -> np.ndarray:
    if y.ndim != 1 or len(y) != count:
        raise StrideError(f"{source}: {name} must be a vector of {count} labels (one per sequence), got shape "
                          f"{list(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise StrideError(f"{source}: {name} must hold integer labels, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise StrideError(f"{source}: {name} holds a negative label ({y.min()} at index {int(np.argmin(y))}); "
                          "labels are class indices 0, 1, ...")
    return y.astype(np.int64)


def _array(archive: np.lib.npyio.NpzFile, name: str, source: Path) -> np.ndarray:
    """One array of the archive; object arrays would need unpickling, which is refused."""
    try:
        return archive[name]
    except ValueError as err:
        raise StrideError(f"{source}: array {name!r} cannot be read without unpickling Python objects ({err}); "
                          f"save plain numeric arrays") from None


def _carve(x: np.ndarray, y: np.ndarray, count: int, seed: int
           ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(kept, held out): a seeded split holding out `count` samples."""
    kept, held = deterministic_split(len(x), count, seed)
    return (x[kept], y[kept]), (x[held], y[held])


def read_sequences(source: Path, val_fraction: float, test_fraction: float, seed: int
                   ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str] | None, dict[str, float]]:
    """The splits, the class names, and the split settings that were used (for the manifest)."""
    try:
        archive = np.load(source, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise StrideError(f"{source}: not a readable .npz file without pickled objects ({err})") from None
    with archive:
        names = set(archive.files)
        class_names = [str(c) for c in _array(archive, "class_names", source)] if "class_names" in names else None
        def pair(split: str) -> tuple[np.ndarray, np.ndarray]:
            x = _as_channels_first(_array(archive, f"x_{split}", source), f"x_{split}", source)
            return x, _labels(_array(archive, f"y_{split}", source), len(x), f"y_{split}", source)

        explicit = {split for split in SPLITS if {f"x_{split}", f"y_{split}"} <= names}
        if explicit == set(SPLITS):
            splits, used = {split: pair(split) for split in SPLITS}, {}
        elif explicit == {"train", "test"}:  # a common layout: validation comes out of the training arrays
            x, y = pair("train")
            val_count = round(len(x) * val_fraction)
            if not 0 < val_count < len(x):
                raise StrideError(f"{source}: {len(x)} training sequences cannot give a validation split of "
                                  f"--val-fraction {val_fraction}")
            train, val = _carve(x, y, val_count, seed)
            splits, used = {"train": train, "val": val, "test": pair("test")}, {"val_fraction": val_fraction}
        elif {"x", "y"} <= names:
            x = _as_channels_first(_array(archive, "x", source), "x", source)
            y = _labels(_array(archive, "y", source), len(x), "y", source)
            test_count, val_count = round(len(x) * test_fraction), round(len(x) * val_fraction)
            if test_count < 1 or val_count < 1 or test_count + val_count >= len(x):
                raise StrideError(f"{source}: {len(x)} sequences cannot be split into train/val/test with "
                                  f"--val-fraction {val_fraction} and --test-fraction {test_fraction}")
            rest, test = _carve(x, y, test_count, seed)
            train, val = _carve(*rest, val_count, seed + 1)
            splits = {"train": train, "val": val, "test": test}
            used = {"val_fraction": val_fraction, "test_fraction": test_fraction}
        else:
            raise StrideError(f"{source}: expected arrays x and y; or x_train, y_train, x_test, y_test (x_val, y_val "
                              f"optional); found {', '.join(sorted(names)) or 'none'}")
    shapes = {split: list(x.shape[1:]) for split, (x, _) in splits.items()}
    if len({tuple(s) for s in shapes.values()}) != 1:
        raise StrideError(f"{source}: all splits need the same [C, T] per sequence, got {shapes}")
    return splits, class_names, used


def prepare_sequences(source: str | Path, out_dir: str | Path, *, val_fraction: float = 0.1,
                      test_fraction: float = 0.2, seed: int = 0, samples_per_shard: int = 5000,
                      overwrite: bool = False) -> Manifest:
    source = Path(source)
    if not source.is_file():
        raise StrideError(f"--source {source} does not exist")
    splits, class_names, used = read_sequences(source, val_fraction, test_fraction, seed)
    num_classes = int(max(y.max() for _, y in splits.values() if len(y))) + 1
    if class_names is None:
        class_names = [str(c) for c in range(num_classes)]
    elif len(class_names) < num_classes:
        raise StrideError(f"{source}: class_names has {len(class_names)} names but labels go up to {num_classes - 1}")
    train_x = splits["train"][0]
    total = sum(len(y) for _, y in splits.values())
    with ShardWriter(out_dir, samples_per_shard=samples_per_shard, overwrite=overwrite) as writer:
        with tqdm(total=total, desc="writing sequence shards", unit="seq") as progress:
            for split, (x, y) in splits.items():
                for index, (sequence, label) in enumerate(zip(x, y)):
                    buffer = io.BytesIO()
                    np.save(buffer, sequence, allow_pickle=False)
                    writer.add(split, f"{split}{index:08d}",
                               {"npy": buffer.getvalue(), "cls": str(int(label)).encode()})
                    progress.update()
        return writer.commit(
            dataset=Path(out_dir).name, task="sequence_classification",
            source={"kind": "npz", "file": str(source.absolute())},
            parameters={**used, **({"seed": seed} if used else {}), "samples_per_shard": samples_per_shard},
            sample_schema={"npy": {"role": "sequence", "shape": list(train_x.shape[1:]), "dtype": "float32",
                                   "layout": "CT"},
                           "cls": {"role": "label", "dtype": "int", "num_classes": len(class_names)}},
            class_names=class_names,
            stats={"mean": train_x.mean(axis=(0, 2)).round(6).tolist(),
                   "std": np.maximum(train_x.std(axis=(0, 2)), 1e-6).round(6).tolist()})
