"""Labeled Faces in the Wild (Huang et al. 2007) in its official layout, for the embedding task (docs/embedding.md).

`--source` is a folder holding `pairs.txt` (View 2: a first line "10 300" = folds x pairs per class, then per
fold 300 matched lines "name n1 n2" and 300 mismatched lines "name1 n1 name2 n2") and the images as
`name/name_NNNN.jpg`, either extracted (directly, or under `lfw/`, `lfw-deepfunneled/`, `lfw_funneled/`) or
as the distributed `lfw.tgz` / `lfw-deepfunneled.tgz`, which is read in place (stride.datamodules.safe_tar:
nothing is extracted). `--source` may also be the tarball itself, with `pairs.txt` beside it.

Splits: `test` holds every image `pairs.txt` names, with its pairs and folds exactly as published, so
`test_verification_acc` is LFW's 10-fold protocol. `train` and `val` hold the people `pairs.txt` never names
(val: a seeded share of them, with pairs drawn in the same structure), so nobody in a test pair is trained on.
Published LFW numbers train on large outside datasets instead (FaceNet: 260M images); train on yours as
identity folders and `stride evaluate` the model on this test split for numbers comparable with theirs.
Faces are a fixed centre crop of the 250 x 250 thumbnail (as FaceNet's first LFW mode, Schroff et al. 2015),
its central 60% (stride's choice), resized to `size_px`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stride.datamodules.embedding import Pair, generate_pairs, write_embedding_dataset
from stride.datamodules.manifest import Manifest
from stride.datamodules.safe_tar import is_archive, read_archive_files
from stride.datamodules.sources.identity_folders import FACE_SIZE_PX, load_face
from stride.errors import StrideError

PAIRS_FILE = "pairs.txt"
IMAGE_FOLDERS = ("lfw", "lfw-deepfunneled", "lfw_funneled")
ARCHIVES = ("lfw.tgz", "lfw-deepfunneled.tgz", "lfw-funneled.tgz")
CROP_FRACTION = 0.6  # the central 150 x 150 of LFW's 250 x 250 thumbnails
IMAGE_NAME = re.compile(r"(?:^|/)(?P<name>[^/]+)/(?P=name)_(?P<number>\d{4})\.jpg$")
MAX_IMAGE_BYTES = 4 << 20
MAX_ARCHIVE_BYTES = 4 << 30

ImageId = tuple[str, int]  # (person, image number)


@dataclass(frozen=True)
class OfficialPair:
    fold: int
    first: ImageId
    second: ImageId
    line: int  # in pairs.txt, 1-based

    @property
    def same(self) -> bool:
        return self.first[0] == self.second[0]


def _number(text: str, where: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise StrideError(f"{where}: {text!r} is not an image number (1, 2, ...)")
    return int(text)


def parse_pairs(text: str, where: str) -> list[OfficialPair]:
    """The pairs of an official `pairs.txt`; a StrideError naming the file and line for anything else."""
    lines = text.splitlines()
    header = lines[0].split() if lines else []
    if len(header) != 2 or not all(part.isdigit() and int(part) > 0 for part in header):
        raise StrideError(f"{where}, line 1: expected 'FOLDS PAIRS_PER_CLASS' (e.g. '10 300'), got "
                          f"{lines[0] if lines else ''!r}")
    folds, per_class = int(header[0]), int(header[1])
    expected = 1 + folds * 2 * per_class
    body = lines[1:]
    while body and not body[-1].strip():
        body.pop()
    if len(body) + 1 != expected:
        raise StrideError(f"{where}: line 1 announces {folds} folds x {per_class} matched and {per_class} mismatched "
                          f"pairs, {expected} lines in all, but the file has {len(body) + 1}")
    pairs = []
    for offset, line in enumerate(body):
        number = offset + 2
        fold, position = divmod(offset, 2 * per_class)
        fields, at = line.split(), f"{where}, line {number}"
        if position < per_class:
            if len(fields) != 3:
                raise StrideError(f"{at}: a matched pair is 'name n1 n2' (fold {fold + 1}, pair {position + 1}), got "
                                  f"{line!r}")
            pair = OfficialPair(fold, (fields[0], _number(fields[1], at)), (fields[0], _number(fields[2], at)), number)
        else:
            if len(fields) != 4:
                raise StrideError(f"{at}: a mismatched pair is 'name1 n1 name2 n2' (fold {fold + 1}, pair "
                                  f"{position - per_class + 1}), got {line!r}")
            if fields[0] == fields[2]:
                raise StrideError(f"{at}: a mismatched pair names {fields[0]!r} twice")
            pair = OfficialPair(fold, (fields[0], _number(fields[1], at)), (fields[2], _number(fields[3], at)), number)
        pairs.append(pair)
    return pairs


def _image_files(source: Path) -> tuple[dict[ImageId, bytes] | dict[ImageId, Path], str]:
    """Every `name/name_NNNN.jpg` of the source: (image id -> bytes or file, where they came from)."""
    archive = source if is_archive(source) else next((source / a for a in ARCHIVES if (source / a).is_file()), None)
    if archive is not None:
        members = read_archive_files(archive, lambda name: IMAGE_NAME.search(name) is not None,
                                     max_file_bytes=MAX_IMAGE_BYTES, max_total_bytes=MAX_ARCHIVE_BYTES)
        found: dict[ImageId, bytes] = {}
        for name, payload in members.items():
            match = IMAGE_NAME.search(name)
            assert match is not None  # only matching names were read
            found[(match["name"], int(match["number"]))] = payload
        return found, str(archive)
    folder = next((source / f for f in IMAGE_FOLDERS if (source / f).is_dir()), source)
    files = {}
    for path in folder.glob("*/*.jpg"):
        match = IMAGE_NAME.search(f"{path.parent.name}/{path.name}")
        if match and path.is_file():
            files[(match["name"], int(match["number"]))] = path
    return files, str(folder)


def prepare_lfw(source: str | Path, out_dir: str | Path, *, size_px: int = FACE_SIZE_PX, val_fraction: float = 0.1,
                seed: int = 0, encoding: str = "png", samples_per_shard: int = 5000,
                overwrite: bool = False) -> Manifest:
    source = Path(source)
    folder = source.parent if is_archive(source) else source
    pairs_file = folder / PAIRS_FILE
    if not pairs_file.is_file():
        raise StrideError(f"--source {source}: no {PAIRS_FILE} in {folder} (LFW's View 2 pairs, distributed beside "
                          "lfw.tgz)")
    official = parse_pairs(pairs_file.read_text(encoding="utf-8", errors="replace"), str(pairs_file))
    images, origin = _image_files(source)
    if not images:
        raise StrideError(f"--source {source}: no images named name/name_NNNN.jpg in {origin}")
    for pair in official:
        for image in (pair.first, pair.second):
            if image not in images:
                raise StrideError(f"{pairs_file}, line {pair.line}: names {image[0]}/{image[0]}_{image[1]:04d}.jpg, "
                                  f"which {origin} does not hold")

    people = sorted({person for person, _ in images})
    label_of = {person: index for index, person in enumerate(people)}
    tested = sorted({image for pair in official for image in (pair.first, pair.second)})
    named = {person for person, _ in tested}
    others = [person for person in people if person not in named]
    counts = Counter(person for person, _ in images)
    repeated = [person for person in others if counts[person] > 1]
    val_people = set(np.random.default_rng(seed).permutation(repeated)[:max(2, round(len(others) * val_fraction))]
                     .tolist())
    members = {"train": sorted(i for i in images if i[0] not in named and i[0] not in val_people),
               "val": sorted(i for i in images if i[0] in val_people), "test": tested}
    if not members["train"] or len(val_people) < 2:
        raise StrideError(f"--source {source}: {len(others)} people are named by no pair of {pairs_file}; stride "
                          "needs some to train on and at least 2 with 2 or more images to validate on")
    labels = {split: np.asarray([label_of[p] for p, _ in listed], dtype=np.int64) for split, listed in members.items()}
    position = {image: index for index, image in enumerate(tested)}
    folds = official[-1].fold + 1  # validation pairs in pairs.txt's structure
    pairs: dict[str, list[Pair]] = {
        "val": generate_pairs(labels["val"], pairs_per_fold=len(official) // (2 * folds), seed=seed + 1, folds=folds),
        "test": [(p.fold, position[p.first], position[p.second], p.same) for p in official]}

    def read() -> Iterator[tuple[str, np.ndarray]]:
        for split, listed in members.items():
            for image in listed:
                stored = images[image]
                payload = stored if isinstance(stored, bytes) else stored.read_bytes()
                yield split, load_face(payload, f"{origin}: {image[0]}/{image[0]}_{image[1]:04d}.jpg", size_px,
                                       CROP_FRACTION)

    return write_embedding_dataset(
        out_dir, dataset="lfw", identities=people, labels=labels, pairs=pairs,
        pair_origin={"test": f"{PAIRS_FILE} (official View 2)", "val": f"drawn in val, seed {seed + 1}"},
        images=read(),
        source={"kind": "official", "dataset": "LFW", "images": origin, "pairs": str(pairs_file.absolute())},
        parameters={"size_px": size_px, "crop_fraction": CROP_FRACTION, "val_fraction": val_fraction, "seed": seed,
                    "encoding": encoding, "samples_per_shard": samples_per_shard},
        encoding=encoding, samples_per_shard=samples_per_shard, overwrite=overwrite)
