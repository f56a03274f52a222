"""CIFAR-10 and CIFAR-100 from their official files, either version, folder or `.tar.gz`.

Krizhevsky (2009), "Learning Multiple Layers of Features from Tiny Images", distributes each
dataset twice (https://www.cs.toronto.edu/~kriz/cifar.html):

- the Python version: pickled dicts (`cifar-10-batches-py/data_batch_1..5`, `test_batch`,
  `batches.meta`; `cifar-100-python/train`, `test`, `meta`), read here by an unpickler that
  admits only numpy arrays, lists, dicts and bytes;
- the binary version: fixed-size records of the label byte(s) (CIFAR-100: coarse, then fine)
  and 3,072 pixel bytes (`cifar-10-batches-bin/data_batch_1.bin`, ...; `cifar-100-binary/`).

Either way a row of 3,072 bytes is the red plane, then green, then blue, each 32 x 32 row-major,
which is exactly C x H x W. Archives are read in place, never extracted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stride.datamodules.image_shards import deterministic_split, write_image_classification
from stride.datamodules.manifest import Manifest
from stride.datamodules.safe_pickle import load_data_pickle
from stride.datamodules.safe_tar import is_archive, read_archive_files
from stride.errors import StrideError

SIDE_PX = 32
ROW_BYTES = 3 * SIDE_PX * SIDE_PX
MAX_FILE_BYTES = 160 << 20  # the largest official file, CIFAR-100's `train`, is about 155 MB
MAX_ARCHIVE_BYTES = 200 << 20  # each official archive inflates to about 185 MB


@dataclass(frozen=True)
class Layout:
    """One official version of one dataset: where its files are and how labels are stored."""

    version: str  # "python" or "binary"
    folder: str  # the folder the official archive unpacks to
    archive: str  # the official archive's file name
    train: tuple[str, ...]
    test: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]  # (label set, pickle key); binary: (label set, description), in byte order
    names: dict[str, tuple[str, str | None]]  # label set -> (file, pickle key; None: a text file, one name a line)

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, *self.test, *dict.fromkeys(file for file, _ in self.names.values()))


@dataclass(frozen=True)
class CifarDataset:
    title: str
    torchvision_name: str
    num_classes: dict[str, int]  # label set -> classes; the first is the default
    layouts: tuple[Layout, Layout]


def _batches(suffix: str) -> tuple[str, ...]:
    return tuple(f"data_batch_{i}{suffix}" for i in range(1, 6))


DATASETS = {
    "cifar10": CifarDataset("CIFAR-10", "CIFAR10", {"label": 10}, (
        Layout("python", "cifar-10-batches-py", "cifar-10-python.tar.gz", _batches(""), ("test_batch",),
               (("label", "labels"),), {"label": ("batches.meta", "label_names")}),
        Layout("binary", "cifar-10-batches-bin", "cifar-10-binary.tar.gz", _batches(".bin"), ("test_batch.bin",),
               (("label", "label byte"),), {"label": ("batches.meta.txt", None)}))),
    "cifar100": CifarDataset("CIFAR-100", "CIFAR100", {"fine": 100, "coarse": 20}, (
        Layout("python", "cifar-100-python", "cifar-100-python.tar.gz", ("train",), ("test",),
               (("fine", "fine_labels"), ("coarse", "coarse_labels")),
               {"fine": ("meta", "fine_label_names"), "coarse": ("meta", "coarse_label_names")}),
        Layout("binary", "cifar-100-binary", "cifar-100-binary.tar.gz", ("train.bin",), ("test.bin",),
               (("coarse", "coarse label byte"), ("fine", "fine label byte")),
               {"fine": ("fine_label_names.txt", None), "coarse": ("coarse_label_names.txt", None)}))),
}


OFFICIAL_FILES = frozenset(file for dataset in DATASETS.values() for layout in dataset.layouts for file in layout.files)


def is_cifar_file(member: str) -> bool:
    """A member that some official CIFAR layout names: what is read from an archive."""
    return member.rsplit("/", 1)[-1] in OFFICIAL_FILES


class SourceFiles:
    """The files under a folder, or the members of an archive read into memory."""

    def __init__(self, root: Path, members: dict[str, bytes] | None = None):
        self.root, self.members = root, members

    def has(self, name: str) -> bool:
        return name in self.members if self.members is not None else (self.root / name).is_file()

    def read(self, name: str) -> bytes:
        if self.members is not None:
            return self.members[name]
        if (size := (self.root / name).stat().st_size) > MAX_FILE_BYTES:
            raise StrideError(f"{self.where(name)}: {size:,} bytes, more than any official CIFAR file "
                              f"({MAX_FILE_BYTES:,}); refusing to read it")
        return (self.root / name).read_bytes()

    def where(self, name: str) -> str:
        """How errors name a file: its path, or `archive.tar.gz:member`."""
        return f"{self.root}:{name}" if self.members is not None else str(self.root / name)


def expected_layouts(dataset: CifarDataset) -> str:
    return "; ".join(f"{layout.folder}/ with {', '.join(layout.files)} (or the archive {layout.archive})"
                     for layout in dataset.layouts)


def find_layout(files: SourceFiles, dataset: CifarDataset) -> tuple[Layout, str] | None:
    """The (layout, member prefix) whose files are present, or None; a partial layout is an error."""
    for layout in dataset.layouts:
        for prefix in (f"{layout.folder}/", ""):
            present = [name for name in layout.files if files.has(prefix + name)]
            if present:
                missing = [name for name in layout.files if name not in present]
                if missing:
                    raise StrideError(f"{files.where(prefix + missing[0])}: missing; the {dataset.title} "
                                      f"{layout.version} version has {', '.join(layout.files)}")
                return layout, prefix
    return None


def open_source(source: Path, dataset: CifarDataset) -> tuple[SourceFiles, Layout, str]:
    """The unpacked files in a folder, else an official archive in it, or the archive itself."""
    if source.is_dir():
        searched = [SourceFiles(source)]
        if found := find_layout(searched[0], dataset):
            return searched[0], *found
        archives = [source / layout.archive for layout in dataset.layouts if (source / layout.archive).is_file()]
    elif is_archive(source):
        searched, archives = [], [source]
    else:
        raise StrideError(f"--source {source} is neither a folder nor a .tar.gz archive")
    for archive in archives:
        members = read_archive_files(archive, is_cifar_file, max_file_bytes=MAX_FILE_BYTES,
                                     max_total_bytes=MAX_ARCHIVE_BYTES)
        searched.append(SourceFiles(archive, members))
        if found := find_layout(searched[-1], dataset):
            return searched[-1], *found
    others = [other.title for other in DATASETS.values() if other is not dataset and any(
        files.has(f"{layout.folder}/{layout.files[0]}") for files in searched for layout in other.layouts)]
    hint = f"; it holds {others[0]}, a different dataset" if others else ""
    raise StrideError(f"{source}: no {dataset.title} files found{hint}; expected {expected_layouts(dataset)}")


def read_python_batch(files: SourceFiles, name: str, layout: Layout) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    where = files.where(name)
    batch = pickled_dict(files, name)
    expected = ["data", *(key for _, key in layout.labels)]
    if missing := [key for key in expected if key not in batch]:
        raise StrideError(f"{where}: missing key(s) {', '.join(missing)}; a batch holds {', '.join(expected)} "
                          f"(found {', '.join(map(str, batch)) or 'none'})")
    data = batch["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == ROW_BYTES):
        described = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise StrideError(f"{where}: 'data' is a {described}; expected a uint8 array N x {ROW_BYTES} "
                          "(red, green, blue planes of 32 x 32)")
    labels = {}
    for label_set, key in layout.labels:
        values = np.asarray(batch[key])
        if values.ndim != 1 or values.dtype.kind not in "iu" or len(values) != len(data):
            raise StrideError(f"{where}: '{key}' must be a list of {len(data)} integer labels, one per row of 'data' "
                              f"(found {values.dtype} of shape {values.shape})")
        labels[label_set] = values.astype(np.int64)
    return data, labels


def pickled_dict(files: SourceFiles, name: str) -> dict[str, object]:
    """A pickled dict of a Python-version file, its bytes keys (Python 2 str) made str."""
    loaded = load_data_pickle(files.read(name), files.where(name))
    if not isinstance(loaded, dict):
        raise StrideError(f"{files.where(name)}: holds a {type(loaded).__name__}, expected a dict")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in loaded.items()}


def read_binary_batch(files: SourceFiles, name: str, layout: Layout) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    raw = files.read(name)
    label_bytes = len(layout.labels)
    record = label_bytes + ROW_BYTES
    if not raw or len(raw) % record:
        raise StrideError(f"{files.where(name)}: {len(raw)} bytes is not a whole number of {record}-byte records "
                          f"({label_bytes} label byte(s) + {ROW_BYTES} pixel bytes); truncated?")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = {label_set: rows[:, index].astype(np.int64) for index, (label_set, _) in enumerate(layout.labels)}
    return rows[:, label_bytes:], labels


def read_class_names(files: SourceFiles, prefix: str, layout: Layout, dataset: CifarDataset) -> dict[str, list[str]]:
    names = {}
    unpickled: dict[str, dict] = {}  # CIFAR-100's `meta` holds both label sets: read it once
    for label_set, (file, key) in layout.names.items():
        if key is None:
            found = [line.strip() for line in files.read(prefix + file).decode("utf-8", "replace").splitlines()]
        else:
            if file not in unpickled:
                unpickled[file] = pickled_dict(files, prefix + file)
            listed = unpickled[file].get(key)
            if not isinstance(listed, list):
                raise StrideError(f"{files.where(prefix + file)}: no list '{key}' of class names")
            found = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in listed]
        found = [n for n in found if n]
        if len(found) != dataset.num_classes[label_set]:
            held = f" ({key})" if key else ""
            raise StrideError(f"{files.where(prefix + file)}{held}: {len(found)} class names, expected "
                              f"{dataset.num_classes[label_set]}")
        names[label_set] = found
    return names


def read_split(files: SourceFiles, prefix: str, layout: Layout, dataset: CifarDataset,
               batch_names: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    reader = read_python_batch if layout.version == "python" else read_binary_batch
    rows: list[np.ndarray] = []
    labels: dict[str, list[np.ndarray]] = {label_set: [] for label_set, _ in layout.labels}
    for name in batch_names:
        data, batch_labels = reader(files, prefix + name, layout)
        for label_set, key in layout.labels:
            values, limit = batch_labels[label_set], dataset.num_classes[label_set]
            if values.size and (values.min() < 0 or values.max() >= limit):
                bad = values[(values < 0) | (values >= limit)][0]
                raise StrideError(f"{files.where(prefix + name)}: {key} value {bad} out of range 0..{limit - 1}")
            labels[label_set].append(values)
        rows.append(data)
    images = np.concatenate(rows).reshape(-1, 3, SIDE_PX, SIDE_PX)  # R, G, B planes, rows top to bottom
    return images, {label_set: np.concatenate(values) for label_set, values in labels.items()}


def coarse_of_fine(fine: np.ndarray, coarse: np.ndarray, num_fine: int) -> list[int] | None:
    """CIFAR-100's fixed superclass of each fine class; None unless every fine class occurs under one."""
    pairs = np.unique(np.stack([fine, coarse], axis=1), axis=0)  # sorted by fine label
    return pairs[:, 1].tolist() if pairs[:, 0].tolist() == list(range(num_fine)) else None


def download(dataset: CifarDataset, root: Path) -> None:
    """Fetch the official Python-version archive with torchvision (needs network); it is read in place."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_url

    reader = getattr(tvd, dataset.torchvision_name)
    download_url(reader.url, str(root), reader.filename, reader.tgz_md5)


def prepare_cifar(name: str, source: str | Path, out_dir: str | Path, *, label_set: str | None = None,
                  val_size: int = 5000, seed: int = 0, encoding: str = "png", samples_per_shard: int = 5000,
                  overwrite: bool = False, fetch: bool = False) -> Manifest:
    if name not in DATASETS:
        raise StrideError(f"unknown CIFAR dataset {name!r}; choose from {', '.join(DATASETS)}")
    dataset = DATASETS[name]
    label_set = label_set or next(iter(dataset.num_classes))
    if label_set not in dataset.num_classes:
        raise StrideError(f"--label-set {label_set}: not a label set of {dataset.title} (it has: "
                          f"{', '.join(dataset.num_classes)})")
    source = Path(source)
    if fetch:
        source.mkdir(parents=True, exist_ok=True)
        download(dataset, source)
    files, layout, prefix = open_source(source, dataset)
    class_names = read_class_names(files, prefix, layout, dataset)
    train_images, train_labels = read_split(files, prefix, layout, dataset, layout.train)
    test_images, test_labels = read_split(files, prefix, layout, dataset, layout.test)
    if not 0 < val_size < len(train_images):
        raise StrideError(f"--val-size must be between 1 and {len(train_images) - 1}, got {val_size}")
    train, val = deterministic_split(len(train_images), val_size, seed)
    labels, test = train_labels[label_set], test_labels[label_set]
    described: dict[str, Any] = {"kind": f"cifar-{layout.version}", "path": str(source.absolute()),
                 "archive": files.root.name if files.members is not None else None,
                 "files": [prefix + file for file in layout.files], "label_set": label_set}
    if "coarse" in class_names and label_set == "fine":
        described |= {"coarse_label_names": class_names["coarse"],
                      "coarse_of_fine": coarse_of_fine(train_labels["fine"], train_labels["coarse"],
                                                    dataset.num_classes["fine"])}
    return write_image_classification(
        out_dir, dataset=name,
        splits={"train": (train_images[train], labels[train]), "val": (train_images[val], labels[val]),
                "test": (test_images, test)},
        class_names=class_names[label_set], source=described,
        parameters={"val_size": val_size, "seed": seed, "label_set": label_set, "encoding": encoding,
                    "samples_per_shard": samples_per_shard},
        encoding=encoding, samples_per_shard=samples_per_shard, overwrite=overwrite)
