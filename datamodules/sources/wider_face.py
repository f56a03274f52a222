"""WIDER FACE (Yang et al., CVPR 2016, http://shuoyang1213.me/WIDERFACE/) from its official files.

The official layout under `--source`, each folder unpacked or as its official zip beside it
(`WIDER_train.zip`, ...; read in place, never extracted):

    WIDER_train/images/<event>/<name>.jpg          WIDER_val/images/<event>/<name>.jpg
    wider_face_split/wider_face_train_bbx_gt.txt   wider_face_split/wider_face_val_bbx_gt.txt
    eval_tools/ground_truth/wider_{face,easy,medium,hard}_val.mat   (optional)

A `_bbx_gt.txt` file repeats: the image path, the face count N, then N lines of ten integers
`x1 y1 w h blur expression illumination invalid occlusion pose`; an image with N = 0 is still
followed by one all-zero line, a placeholder rather than a face. Some boxes have zero width or
height, or lie wholly outside their image: they stay in the annotation but are no training
target (`trainable` false), counted per split in the manifest and logged.

Splits: train is WIDER_train minus a seeded held-out validation set of `val_size` images;
test is WIDER_val, what the official evaluation scores. With the evaluation files the test
samples also say which faces each difficulty subset counts. RetinaFace's `label.txt` files
(Deng et al., CVPR 2020) add five landmarks per face.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from stride.datamodules.image_shards import deterministic_split
from stride.datamodules.manifest import Manifest
from stride.datamodules.pixel_stats import PixelSums
from stride.datamodules.sources.images import ImageRules, ReadImage, decode_image, read_in_order
from stride.datamodules.sources.wider_eval_mat import EVAL_FILES, SUBSET_FILES, EvalFaces, read_wider_eval
from stride.datamodules.writer import ShardWriter
from stride.errors import StrideError
from stride.names import is_plain_relative, safe_filename

log = logging.getLogger(__name__)

ATTRIBUTES = {  # the face attributes of a `_bbx_gt.txt` line, in order, with their official ranges
    "blur": 2, "expression": 1, "illumination": 1, "invalid": 1, "occlusion": 2, "pose": 1}
FACE_LINE = "x1 y1 w h " + " ".join(ATTRIBUTES)
SPLIT_FOLDERS = {"train": "WIDER_train", "test": "WIDER_val"}  # where each split's images come from
ANNOTATION_FILES = {"train": "wider_face_train_bbx_gt.txt", "test": "wider_face_val_bbx_gt.txt"}
ANNOTATION_FOLDERS = ("wider_face_split", "")  # searched in order, relative to the source
EVAL_FOLDERS = ("eval_tools/ground_truth", "ground_truth", "wider_face_split", "")
ARCHIVED_FOLDERS = ("WIDER_train", "WIDER_val", "wider_face_split", "eval_tools")
MAX_MEMBER_BYTES = 256 << 20  # no official file comes near; a larger zip member is refused, not read
LANDMARK_POINTS = 5
SPLITS = ("train", "val", "test")


@dataclass
class WiderImage:
    """One image of a `_bbx_gt.txt` file, its faces exactly as written."""

    file: str  # "<event>/<name>.jpg"
    boxes: np.ndarray  # int64 (n, 4) x, y, w, h
    attributes: dict[str, np.ndarray]  # name -> int64 (n,), keys as in ATTRIBUTES
    index: int  # position in its annotation file: a sample key that does not depend on the split
    landmarks: list[list[float] | None] | None = None  # per face x1, y1, ..., x5, y5 (-1 missing); None: no label
    subsets: dict[str, list[bool]] | None = None  # official difficulty subsets, where known

    @property
    def event(self) -> str:
        return self.file.split("/", 1)[0]

    @property
    def sized(self) -> np.ndarray:
        """Faces whose box has a positive width and height."""
        return (self.boxes[:, 2] > 0) & (self.boxes[:, 3] > 0)

    def overlapping(self, width: int, height: int) -> np.ndarray:
        """Faces whose box covers some of a `width` x `height` image; another box has no pixel of its face."""
        x, y, w, h = self.boxes.T
        return (x < width) & (y < height) & (x + w > 0) & (y + h > 0)

    def trainable(self, width: int, height: int) -> np.ndarray:
        return self.sized & self.overlapping(width, height)


# -- the annotation files ------------------------------------------------------------------------

def _image_path(line: str, where: str) -> str:
    path = line.strip()
    if not (path.lower().endswith(".jpg") and is_plain_relative(path) and path.count("/") == 1):
        raise StrideError(f"{where}: expected an image path <event>/<name>.jpg, found {line.strip()[:80]!r}")
    return path


def _integers(line: str, count: int, where: str, expected: str) -> list[int]:
    fields = line.split()
    if len(fields) != count:
        raise StrideError(f"{where}: expected {count} integers ({expected}), found {len(fields)}: "
                          f"{line.strip()[:80]!r}")
    try:
        return [int(value) for value in fields]
    except ValueError:
        raise StrideError(f"{where}: expected {count} integers ({expected}), found {line.strip()[:80]!r}") from None


def parse_bbx_gt(text: str, where: str) -> list[WiderImage]:
    """The images of a `wider_face_{train,val}_bbx_gt.txt`; `where` names the file in errors."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    images: list[WiderImage] = []
    seen: set[str] = set()
    number = 0  # index into lines of the next line to read; errors give it one-based
    while number < len(lines):
        file = _image_path(lines[number], f"{where}, line {number + 1}")
        if file in seen:
            raise StrideError(f"{where}, line {number + 1}: {file} is listed a second time")
        seen.add(file)
        if number + 1 >= len(lines):
            raise StrideError(f"{where}, line {number + 2}: expected the face count of {file}, found the end of file")
        (count,) = _integers(lines[number + 1], 1, f"{where}, line {number + 2}", f"the face count of {file}")
        if count < 0:
            raise StrideError(f"{where}, line {number + 2}: face count {count} of {file} is negative")
        number += 2
        rows: list[list[int]] = []
        # N = 0 is followed by an all-zero placeholder (some copies leave it out: then the next line is a path)
        placeholder = count == 0 and number < len(lines) and not lines[number].strip().lower().endswith(".jpg")
        for _ in range(count or int(placeholder)):
            if number >= len(lines):
                raise StrideError(f"{where}, line {number + 1}: expected face {len(rows) + 1} of {count} of {file} "
                                  f"({FACE_LINE}), found the end of file")
            row = _integers(lines[number], 10, f"{where}, line {number + 1}", FACE_LINE)
            for name, value in zip(ATTRIBUTES, row[4:]):
                if not 0 <= value <= ATTRIBUTES[name]:
                    raise StrideError(f"{where}, line {number + 1}: {name} {value} out of range 0..{ATTRIBUTES[name]}")
            if count == 0 and any(row):
                raise StrideError(f"{where}, line {number + 1}: {file} has 0 faces, so this line should be the "
                                  f"all-zero placeholder, found {lines[number].strip()!r}")
            rows.append(row)
            number += 1
        values = np.array(rows[:count], dtype=np.int64).reshape(-1, 10)
        images.append(WiderImage(file, values[:, :4], {name: values[:, 4 + i] for i, name in enumerate(ATTRIBUTES)},
                                 index=len(images)))
    if not images:
        raise StrideError(f"{where}: no images listed; expected the official WIDER FACE annotation format")
    return images


@dataclass
class LandmarkFace:
    box: tuple[float, float, float, float]  # x, y, w, h
    points: list[float] | None  # x1, y1, ..., x5, y5, -1 where missing; None: no landmarks at all


LANDMARK_LAYOUTS = {4: "x y w h", 15: "x y w h, 5 x (x y), score", 20: "x y w h, 5 x (x y flag), score"}


def parse_landmark_labels(text: str, where: str) -> dict[str, list[LandmarkFace]]:
    """RetinaFace's `label.txt`: `# <event>/<name>.jpg`, then one line per face (layouts in LANDMARK_LAYOUTS)."""
    faces: dict[str, list[LandmarkFace]] = {}
    current: list[LandmarkFace] | None = None
    expected = "; ".join(f"{n} numbers: {layout}" for n, layout in LANDMARK_LAYOUTS.items())
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line[1:].split()
            file = _image_path(parts[0] if parts else "", f"{where}, line {number}")
            if file in faces:
                raise StrideError(f"{where}, line {number}: {file} is listed a second time")
            current = faces[file] = []
            continue
        if current is None:
            raise StrideError(f"{where}, line {number}: expected '# <event>/<name>.jpg' before the first face")
        try:
            values = [float(value) for value in line.split()]
        except ValueError:
            raise StrideError(f"{where}, line {number}: expected numbers ({expected}), found {line.strip()[:80]!r}") \
                from None
        if len(values) not in LANDMARK_LAYOUTS:
            raise StrideError(f"{where}, line {number}: {len(values)} numbers; expected {expected}")
        points = None
        if len(values) > 4:
            step = 3 if len(values) == 20 else 2
            triples = [values[4 + step * p: 4 + step * (p + 1)] for p in range(LANDMARK_POINTS)]
            xy = [[-1.0, -1.0] if (step == 3 and t[2] < 0) or t[:2] == [-1.0, -1.0] else t[:2] for t in triples]
            if any(point != [-1.0, -1.0] for point in xy):
                points = [round(v, 3) for point in xy for v in point]
        x, y, w, h = values[:4]  # every layout starts with the box
        current.append(LandmarkFace((x, y, w, h), points))
    return faces


def attach_landmarks(images: list[WiderImage], labels: dict[str, list[LandmarkFace]]) -> dict[str, int]:
    """Give each labelled image's faces the landmarks of the label face with the same box; returns counts."""
    counts = {"images": 0, "faces_with_landmarks": 0, "label_faces_without_a_box": 0}
    for image in images:
        labelled = labels.get(image.file)
        if labelled is None:
            continue
        counts["images"] += 1
        unused = list(labelled)
        image.landmarks = []
        for box in image.boxes.tolist():
            match = next((face for face in unused if list(face.box) == box), None)
            if match is not None:
                unused.remove(match)
            image.landmarks.append(match.points if match else None)
            counts["faces_with_landmarks"] += bool(match and match.points)
        counts["label_faces_without_a_box"] += len(unused)
    return counts


# -- the source: folders, or the official zip archives read in place -----------------------------

class WiderSource:
    """The files under `root`; an official folder that is not there is read from `<folder>.zip` beside it."""

    def __init__(self, root: Path):
        if not root.is_dir():
            raise StrideError(f"--source {root} is not a folder; expected one holding WIDER_train/, WIDER_val/ and "
                              "wider_face_split/ (or their official zip archives)")
        self.root = root
        self.archives: dict[str, zipfile.ZipFile] = {}  # top folder -> its archive
        self.members: dict[str, tuple[str, zipfile.ZipInfo]] = {}  # relative path -> (top folder, member)
        for folder in ARCHIVED_FOLDERS:
            archive = root / f"{folder}.zip"
            if not (root / folder).is_dir() and archive.is_file():
                self._index(folder, archive)

    def _index(self, folder: str, archive: Path) -> None:
        try:
            opened = zipfile.ZipFile(archive)
            infos = opened.infolist()
        except (zipfile.BadZipFile, OSError) as err:
            raise StrideError(f"{archive}: cannot read the zip archive ({err}); is the download complete?") from None
        self.archives[folder] = opened
        prefixed = any(info.filename.startswith(f"{folder}/") for info in infos)
        for info in infos:
            name = info.filename.rstrip("/")
            if not is_plain_relative(name):
                raise StrideError(f"{archive}: member {info.filename!r} is not a plain relative name (absolute, "
                                  "'..' or empty parts); refusing the archive")
            if info.is_dir():
                continue
            if (info.external_attr >> 16) & 0o170000 == 0o120000 or info.flag_bits & 0x1:
                raise StrideError(f"{archive}: member {name!r} is a link or encrypted; an official archive holds "
                                  "only plain files, refusing it")
            self.members[name if prefixed else f"{folder}/{name}"] = (folder, info)

    def close(self) -> None:
        for archive in self.archives.values():
            archive.close()

    def __enter__(self) -> WiderSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def has(self, relative: str) -> bool:
        return relative in self.members or (self.root / relative).is_file()

    def where(self, relative: str) -> str:
        if relative in self.members:
            folder, info = self.members[relative]
            return f"{self.root / folder}.zip:{info.filename}"
        return str(self.root / relative)

    def read(self, relative: str) -> bytes:
        try:
            if relative in self.members:
                folder, info = self.members[relative]
                if info.file_size > MAX_MEMBER_BYTES:
                    raise StrideError(f"{self.where(relative)}: {info.file_size} bytes, more than any official file; "
                                      "refusing to read it")
                return self.archives[folder].read(info)
            return (self.root / relative).read_bytes()
        except (OSError, zipfile.BadZipFile, EOFError) as err:
            raise StrideError(f"{self.where(relative)}: cannot read ({err})") from None

    def first(self, folders: Iterable[str], name: str) -> str | None:
        """The relative path of `name` in the first of `folders` that holds it."""
        return next((path for folder in folders if self.has(path := f"{folder}/{name}".lstrip("/"))), None)


def read_annotations(source: WiderSource, split: str) -> tuple[list[WiderImage], str]:
    name = ANNOTATION_FILES[split]
    relative = source.first(ANNOTATION_FOLDERS, name)
    if relative is None:
        raise StrideError(f"{source.root}: {name} not found in wider_face_split/ (or wider_face_split.zip); "
                          f"expected the official annotation files {', '.join(ANNOTATION_FILES.values())}")
    where = source.where(relative)
    try:
        text = source.read(relative).decode("utf-8")
    except UnicodeDecodeError as err:
        raise StrideError(f"{where}: not a text file ({err})") from None
    return parse_bbx_gt(text, where), where


def read_landmarks(labels: Path) -> tuple[dict[str, list[LandmarkFace]], list[str]]:
    """Every `label.txt` given: the file itself, or those in a folder and its subfolders (RetinaFace's train/, val/)."""
    files = [labels] if labels.is_file() else sorted(labels.glob("label.txt")) + sorted(labels.glob("*/label.txt"))
    if not files:
        raise StrideError(f"--labels {labels}: no label.txt found (give the file, or a folder holding "
                          "train/label.txt and val/label.txt)")
    merged: dict[str, list[LandmarkFace]] = {}
    for path in files:
        try:
            parsed = parse_landmark_labels(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError) as err:
            raise StrideError(f"{path}: cannot read as text ({err})") from None
        if twice := next((file for file in parsed if file in merged), None):
            raise StrideError(f"{path}: {twice} is also labelled in another label.txt")
        merged.update(parsed)
    return merged, [str(path) for path in files]


def read_subsets(source: WiderSource, test: list[WiderImage], annotation_where: str) -> str | None:
    """Record the official subsets of each test image from the evaluation files, if present; their folder."""
    folder = next((folder for folder in EVAL_FOLDERS
                   if any(source.first([folder], name) for name in SUBSET_FILES.values())), None)
    if folder is None:
        return None
    opened = {name: (source.where(path), io.BytesIO(source.read(path))) for name in EVAL_FILES
              if (path := source.first([folder], name))}
    if missing := [name for name in EVAL_FILES if name not in opened]:
        raise StrideError(f"{source.where(folder or '.')}: holds some WIDER FACE evaluation files but not "
                          f"{', '.join(missing)}; the evaluation needs all of {', '.join(EVAL_FILES)}")
    evaluation = read_wider_eval(opened)
    mat_where = opened[EVAL_FILES[0]][0]
    listed = {image.file for image in test}
    if extra := [file for file in evaluation if file not in listed]:
        raise StrideError(f"{mat_where} lists {len(extra)} image(s) that {annotation_where} does not, "
                          f"e.g. {extra[0]}; expected the same WIDER_val images")
    for image in test:
        image.subsets = _subsets_of(image, evaluation.get(image.file), mat_where, annotation_where)
    return source.where(folder or ".")


def _subsets_of(image: WiderImage, faces: EvalFaces | None, mat_where: str, annotation_where: str) -> dict:
    if faces is None:
        raise StrideError(f"{annotation_where} lists {image.file}, which {mat_where} does not; expected the same "
                          "WIDER_val images")
    boxes, count = faces.boxes, len(image.boxes)
    if count == 0 and len(boxes) == 1 and not boxes.any():  # the txt's all-zero placeholder, kept in the .mat
        return {subset: [] for subset in faces.subsets}
    if len(boxes) != count or not np.array_equal(boxes, image.boxes):
        raise StrideError(f"{image.file}: {mat_where} gives {len(boxes)} face(s), {annotation_where} {count}"
                          f"{' with different boxes' if len(boxes) == count else ''}; the files do not belong "
                          "together")
    return {subset: mask.tolist() for subset, mask in faces.subsets.items()}


# -- the images ----------------------------------------------------------------------------------

WIDER_IMAGES = ImageRules(formats=("JPEG",), kept_modes=("RGB",), stats_grid_px=4)  # statistics: every 4th pixel


def read_wider_image(source: WiderSource, relative: str, with_sums: bool) -> ReadImage:
    """The JPEG's bytes, checked to decode; a file that does not is an error naming it."""
    return decode_image(source.read(relative), source.where(relative), WIDER_IMAGES, with_sums)


def sample_key(image: WiderImage) -> str:
    """Position in the annotation file plus the name: unique, stable, and no '.' (WebDataset splits keys there)."""
    return f"{image.index:05d}_{safe_filename(image.file.rsplit('/', 1)[-1][:-4]).replace('.', '_')[:80]}"


def sample_record(image: WiderImage, read: ReadImage) -> dict[str, Any]:
    record: dict[str, Any] = {"file": image.file, "event": image.event, "width": read.width, "height": read.height,
                              "boxes": image.boxes.tolist()}
    record.update({name: values.tolist() for name, values in image.attributes.items()})
    record["trainable"] = image.trainable(read.width, read.height).tolist()
    if image.landmarks is not None:
        record["landmarks"] = image.landmarks
    if image.subsets is not None:
        record["subsets"] = image.subsets
    return record


@dataclass
class FaceCounts:
    images: int = 0
    images_without_faces: int = 0
    kept: int = 0
    zero_width_or_height: int = 0
    outside_image: int = 0  # boxes wholly outside their image: dropped
    first_outside: str = ""  # the first of them, for the log
    partly_outside_image: int = 0  # kept faces whose box crosses the image border (the loader clips them)

    def add(self, image: WiderImage, read: ReadImage) -> None:
        sized, overlapping = image.sized, image.overlapping(read.width, read.height)
        trainable = sized & overlapping
        x, y, w, h = image.boxes[trainable].T
        self.images += 1
        self.images_without_faces += not len(image.boxes)
        self.kept += int(trainable.sum())
        self.zero_width_or_height += int((~sized).sum())
        outside = sized & ~overlapping
        if outside.any() and not self.outside_image:
            self.first_outside = f"{image.file} ({read.width} x {read.height}): {image.boxes[outside][0].tolist()}"
        self.outside_image += int(outside.sum())
        self.partly_outside_image += int(((x < 0) | (y < 0) | (x + w > read.width) | (y + h > read.height)).sum())

    def summary(self) -> dict[str, Any]:
        return {"images": self.images, "images_without_faces": self.images_without_faces, "kept": self.kept,
                "dropped": {"zero_width_or_height": self.zero_width_or_height, "outside_image": self.outside_image},
                "partly_outside_image": self.partly_outside_image}


@dataclass
class Written:
    counts: dict[str, FaceCounts] = field(default_factory=dict)
    pixels: PixelSums = field(default_factory=PixelSums.empty)
    re_encoded: int = 0


def write_splits(writer: ShardWriter, source: WiderSource, splits: dict[str, list[WiderImage]],
                 folders: dict[str, str], dataset: str) -> Written:
    written = Written()
    with tqdm(total=sum(map(len, splits.values())), desc=f"writing {dataset} shards", unit="img") as progress:
        for split in SPLITS:
            images, counts = splits[split], written.counts.setdefault(split, FaceCounts())
            paths = (f"{folders[split]}/images/{image.file}" for image in images)
            reads = read_in_order(partial(read_wider_image, source, with_sums=split == "train"), paths)
            for image, read in zip(images, reads):
                writer.add(split, sample_key(image), {
                    "jpg": read.payload, "json": json.dumps(sample_record(image, read)).encode("utf-8")})
                counts.add(image, read)
                written.re_encoded += read.re_encoded
                if read.sums is not None:
                    written.pixels.merge(read.sums)
                progress.update()
    return written


def check_images_present(source: WiderSource, splits: dict[str, list[WiderImage]], folders: dict[str, str]) -> None:
    missing = [f"{folders[split]}/images/{image.file}" for split in SPLITS for image in splits[split]
               if not source.has(f"{folders[split]}/images/{image.file}")]
    if missing:
        raise StrideError(f"{source.root}: {len(missing)} image(s) named by the annotation files are missing, e.g. "
                          f"{', '.join(missing[:3])}; is the download complete and unpacked (or its zip beside it)?")


# -- the converter -------------------------------------------------------------------------------

def prepare_wider_face(source: str | Path, out: str | Path, *, val_size: int = 1000, seed: int = 0,
                       samples_per_shard: int = 1000, overwrite: bool = False,
                       labels: str | Path | None = None, dataset: str = "wider_face",
                       provenance: dict[str, Any] | None = None) -> Manifest:
    """Shards of (`jpg` as distributed, `json` annotation) per image; see the module docstring for the splits.

    `labels`: a RetinaFace `label.txt`, or a folder holding them (train/label.txt, val/label.txt);
    each labelled image gets landmarks, whichever WIDER tree it is in. `dataset` and `provenance`
    (merged into the manifest's source) name data that only has the WIDER layout, like `faces`.
    """
    source_path = Path(source)
    with WiderSource(source_path) as files:
        train_images, train_where = read_annotations(files, "train")
        test_images, test_where = read_annotations(files, "test")
        if not 0 < val_size < len(train_images):
            raise StrideError(f"--val-size must be between 1 and {len(train_images) - 1} (the images listed in "
                              f"{train_where}), got {val_size}")
        annotations: dict[str, Any] = {}
        label_files: list[str] = []
        if labels is not None:
            landmarks, label_files = read_landmarks(Path(labels))
            annotations["landmarks"] = {SPLIT_FOLDERS[split]: attach_landmarks(images, landmarks)
                                        for split, images in (("train", train_images), ("test", test_images))}
            known = {image.file for image in (*train_images, *test_images)}
            annotations["landmarks"]["labelled_images_not_in_wider"] = sum(file not in known for file in landmarks)
            if annotations["landmarks"]["labelled_images_not_in_wider"]:
                log.warning("wider_face: %d image(s) of %s are in neither annotation file; their landmarks are unused",
                            annotations["landmarks"]["labelled_images_not_in_wider"], ", ".join(label_files))
        subsets_from = read_subsets(files, test_images, test_where)
        kept, held_out = deterministic_split(len(train_images), val_size, seed)
        splits = {"train": [train_images[i] for i in kept], "val": [train_images[i] for i in held_out],
                  "test": test_images}
        folders = {"train": SPLIT_FOLDERS["train"], "val": SPLIT_FOLDERS["train"], "test": SPLIT_FOLDERS["test"]}
        check_images_present(files, splits, folders)
        with ShardWriter(out, samples_per_shard=samples_per_shard, overwrite=overwrite) as writer:
            written = write_splits(writer, files, splits, folders, dataset)
            if written.re_encoded:
                log.warning("%s: %d image(s) were not RGB JPEGs and were re-encoded as RGB JPEGs", dataset,
                            written.re_encoded)
            for split, counts in written.counts.items():
                if counts.outside_image:
                    log.warning("%s: left out %d face box(es) of the %s split lying wholly outside their image "
                                "(first: %s)", dataset, counts.outside_image, split, counts.first_outside)
            annotations["faces"] = {split: counts.summary() for split, counts in written.counts.items()}
            if subsets_from:
                recorded: list[dict[str, list[bool]]] = []
                for image in test_images:
                    assert image.subsets is not None  # read_subsets recorded every test image's subsets
                    recorded.append(image.subsets)
                annotations["subsets"] = {"from": subsets_from, "split": "test", "faces": {
                    subset: sum(sum(marks[subset]) for marks in recorded) for subset in SUBSET_FILES}}
            return writer.commit(
                dataset=dataset, task="detection",
                source={"kind": "wider-face", "folder": str(source_path.absolute()),
                        "archives": sorted(f"{folder}.zip" for folder in files.archives),
                        "annotation_files": [train_where, test_where], "evaluation_files": subsets_from,
                        "landmark_files": label_files, "re_encoded_images": written.re_encoded,
                        **(provenance or {})},
                parameters={"val_size": val_size, "seed": seed, "samples_per_shard": samples_per_shard,
                            "stats_grid_px": WIDER_IMAGES.stats_grid_px},
                sample_schema={
                    "jpg": {"role": "image", "dtype": "uint8", "layout": "JPEG as distributed (RGB), any size"},
                    "json": {"role": "annotation", "boxes": "x1, y1, w, h integers as annotated",
                             "keys": ["file", "event", "width", "height", "boxes", *ATTRIBUTES, "trainable",
                                      "landmarks (optional)", "subsets (optional)"]}},
                class_names=["face"], stats=written.pixels.stats(), annotations=annotations)
