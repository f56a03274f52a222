"""Write CIFAR-10/100 (Python and binary versions, folders or .tar.gz) and SVHN .mat files exactly as distributed.

The Python version's batches were written by Python 2's cPickle at protocol 2: str (bytes in
Python 3) as BINSTRING opcodes and numpy 1's `numpy.core.multiarray._reconstruct`.
`Python2Pickler` writes exactly those opcodes and globals, so the fixtures hold what the
official files hold, not what Python 3 would write.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from stride.datamodules.manifest import read_manifest
from stride.datamodules.streaming import decode_member, iter_shard

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FINE_NAMES = [f"fine_{i:02d}" for i in range(100)]
COARSE_NAMES = [f"coarse_{i:02d}" for i in range(20)]


class Python2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be changed
    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:  # Python 2's str was bytes: numpy's dtype codes ('u1', '|') too
        self.save_python2_str(obj.encode("latin1"))

    dispatch[bytes] = save_python2_str
    dispatch[str] = save_str

    def save_global(self, obj, name=None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")  # numpy 1's module name
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode("ascii"))
        self.memoize(obj)


def python2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def gradient_image() -> np.ndarray:
    """3 x 32 x 32 with telling planes: red grows down the rows, green along the columns, blue is 77."""
    ramp = (np.arange(32, dtype=np.uint8) * 8)
    return np.stack([np.repeat(ramp[:, None], 32, 1), np.repeat(ramp[None, :], 32, 0), np.full((32, 32), 77, np.uint8)])


def cifar_arrays(count: int, label_counts: dict[str, int], seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Random images N x 3 x 32 x 32 (the first one `gradient_image`), labels per label set."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    images[0] = gradient_image()
    if "fine" not in label_counts:
        return images, {"label": rng.integers(0, label_counts["label"], count)}
    fine = rng.permutation(count) % 100  # each fine class under one fixed superclass, as in CIFAR-100
    return images, {"fine": fine, "coarse": fine // 5}


def write_cifar(root: Path, dataset: str = "cifar10", version: str = "python", *, per_batch: int = 20,
                test: int = 20, seed: int = 0) -> dict:
    """Write the official folder under `root`; returns train/test images and labels (train in batch order)."""
    root.mkdir(parents=True, exist_ok=True)
    label_counts = {"label": 10} if dataset == "cifar10" else {"fine": 100, "coarse": 20}
    if dataset == "cifar10":
        batches = {f"data_batch_{i}": per_batch for i in range(1, 6)} | {"test_batch": test}
    else:
        batches = {"train": per_batch, "test": test}
    folder = root / {("cifar10", "python"): "cifar-10-batches-py", ("cifar10", "binary"): "cifar-10-batches-bin",
                     ("cifar100", "python"): "cifar-100-python", ("cifar100", "binary"): "cifar-100-binary"}[
                         (dataset, version)]
    folder.mkdir()
    written = {}
    for index, (name, count) in enumerate(batches.items()):
        images, labels = cifar_arrays(count, label_counts, seed + index)
        written[name] = (images, labels)
        rows = images.reshape(count, 3072)
        if version == "binary":
            label_bytes = [labels["label"]] if dataset == "cifar10" else [labels["coarse"], labels["fine"]]
            records = np.column_stack([*label_bytes, rows]).astype(np.uint8)
            (folder / f"{name}.bin").write_bytes(records.tobytes())
            continue
        batch = {b"batch_label": f"{name} batch".encode(), b"data": rows,
                 b"filenames": [f"image_{index}_{i}.png".encode() for i in range(count)]}
        if dataset == "cifar10":
            batch[b"labels"] = [int(label) for label in labels["label"]]
        else:
            batch |= {b"fine_labels": [int(v) for v in labels["fine"]],
                      b"coarse_labels": [int(v) for v in labels["coarse"]]}
        (folder / name).write_bytes(python2_pickle(batch))
    encoded = lambda names: [n.encode() for n in names]  # noqa: E731
    if (dataset, version) == ("cifar10", "python"):
        (folder / "batches.meta").write_bytes(python2_pickle(
            {b"label_names": encoded(CIFAR10_NAMES), b"num_cases_per_batch": per_batch, b"num_vis": 3072}))
    elif (dataset, version) == ("cifar100", "python"):
        (folder / "meta").write_bytes(python2_pickle(
            {b"fine_label_names": encoded(FINE_NAMES), b"coarse_label_names": encoded(COARSE_NAMES)}))
    elif dataset == "cifar10":
        (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    else:
        (folder / "fine_label_names.txt").write_text("\n".join(FINE_NAMES) + "\n")
        (folder / "coarse_label_names.txt").write_text("\n".join(COARSE_NAMES) + "\n")
    train = [written[name] for name in batches if "test" not in name]
    return {"folder": folder,
            "train_images": np.concatenate([images for images, _ in train]),
            "train_labels": {key: np.concatenate([labels[key] for _, labels in train]) for key in label_counts},
            "test_images": written[[name for name in batches if "test" in name][0]][0],
            "test_labels": written[[name for name in batches if "test" in name][0]][1]}


def tar_gz(folder: Path, archive: Path) -> Path:
    """The folder as its official archive: members `<folder name>/<file>`."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def write_svhn_mat(path: Path, images_nchw: np.ndarray, labels_1_to_10: np.ndarray, **extra) -> None:
    """An official cropped-digits file: X is H x W x C x N, y is N x 1 (10 for the digit 0)."""
    from scipy.io import savemat

    savemat(path, {"X": images_nchw.transpose(2, 3, 1, 0), "y": labels_1_to_10.reshape(-1, 1).astype(np.uint8),
                   **extra})


def read_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A prepared split back as (uint8 images N x C x H x W, labels), in shard order."""
    images, labels = [], []
    for shard in read_manifest(root).split(split).shards:
        for _, members in iter_shard(root / shard.name, ("png", "cls")):
            images.append(decode_member("png", members["png"]))
            labels.append(decode_member("cls", members["cls"]))
    return np.stack(images), np.array(labels)
