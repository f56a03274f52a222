"""MSCOCO captions (Chen et al. 2015, arXiv:1504.00325) from the official files, optionally in Karpathy's split.

The official layout under `--source` (2014 or 2017 names):

    train2014/COCO_train2014_000000000009.jpg ...     train2017/000000000009.jpg ...
    val2014/...                                       val2017/...
    annotations/captions_train2014.json, captions_val2014.json   (or ..._train2017.json, ..._val2017.json)

An annotation file holds `images[]` (id, file_name, height, width) and `annotations[]`
(image_id, id, caption). Without a Karpathy split, train is the official train set minus a
seeded held-out validation set of `val_size` images, and test is the official val set (whose
captions are public, unlike the test set's). With Karpathy & Fei-Fei's `dataset_coco.json`
(CVPR 2015) its `images[].split` decides: train and restval -> train, val, test; an image is
`filepath/filename` with captions `sentences[].raw`.

One sample per image: the JPEG bytes as distributed and a JSON record with all its captions.
The vocabulary of the training captions is saved inside the dataset (`vocabulary.json`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from stride.bounded_loading import read_json_file
from stride.datamodules.image_shards import deterministic_split
from stride.datamodules.manifest import Manifest, sha256_of
from stride.datamodules.pixel_stats import PixelSums
from stride.datamodules.sources.images import ImageRules, ReadImage, UnusableImage, decode_image, read_in_order
from stride.datamodules.vocabulary import VOCABULARY_FILE, Vocabulary, tokenize
from stride.datamodules.writer import ShardWriter
from stride.errors import StrideError

log = logging.getLogger(__name__)

YEARS = ("2017", "2014")  # the first found wins: 2017 is the split the study used (docs/models.md, A4)
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
SPLITS = ("train", "val", "test")
MAX_ANNOTATION_BYTES = 1 << 30  # captions_train2017.json is 92 MB, Karpathy's dataset_coco.json 144 MB


@dataclass(frozen=True)
class CaptionedImage:
    image_id: int
    file: str  # relative to the source folder, e.g. "val2014/COCO_val2014_000000000042.jpg"
    captions: tuple[str, ...]  # raw, as annotated; those without a single word are dropped (and counted)
    width: int | None = None  # as annotated; Karpathy's file gives none
    height: int | None = None


class Skips:
    """Why samples (or captions) were left out: counts for the manifest, first examples for the log."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, example)

    def log(self, dataset: str) -> None:
        for reason, count in self.counts.items():
            log.warning("%s: left out %d x %s (first: %s)", dataset, count, reason, self.examples[reason])


# -- reading JSON fields, every error naming the file and the key path ---------------------------

KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "size": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "list": (lambda v: isinstance(v, list), "a list"),
    # one path component: a file or folder name taken from the data never leaves the source folder
    "name": (lambda v: isinstance(v, str) and v not in ("", ".", "..") and not v.startswith(".")
             and not any(c in v for c in "/\\\x00"), "a plain file or folder name"),
}


def field(path: Path, record: Any, where: str, key: str, kind: str) -> Any:
    """`record[key]` after checking it is `kind`; `where` is the record's key path, e.g. `annotations[17]`."""
    at = f"{where}.{key}" if where else key
    if not isinstance(record, dict):
        raise StrideError(f"{path}: {where or 'the top level'} is {type(record).__name__}, expected an object "
                          f"holding {key!r}")
    if key not in record:
        raise StrideError(f"{path}: {at} is missing")
    check, expected = KINDS[kind]
    if not check(record[key]):
        raise StrideError(f"{path}: {at} is {json.dumps(record[key])[:80]}, expected {expected}")
    return record[key]


def worded(captions: Iterable[str], where: str, skips: Skips) -> tuple[str, ...]:
    kept = []
    for caption in captions:
        if tokenize(caption):
            kept.append(caption)
        else:
            skips.add("caption without a word (dropped)", f"{where}: {caption!r}")
    return tuple(kept)


def read_official(path: Path, folder: str, skips: Skips) -> list[CaptionedImage]:
    """The captioned images of one official annotation file, sorted by id; their files are in `folder`."""
    data = read_json_file(path, max_bytes=MAX_ANNOTATION_BYTES)
    images: dict[int, dict[str, Any]] = {}
    for index, record in enumerate(field(path, data, "", "images", "list")):
        where = f"images[{index}]"
        image_id = field(path, record, where, "id", "int")
        if image_id in images:
            raise StrideError(f"{path}: {where}.id {image_id} repeats an earlier image's id")
        images[image_id] = {"file": f"{folder}/{field(path, record, where, 'file_name', 'name')}",
                            "width": field(path, record, where, "width", "size"),
                            "height": field(path, record, where, "height", "size"), "captions": []}
    for index, record in enumerate(field(path, data, "", "annotations", "list")):
        where = f"annotations[{index}]"
        field(path, record, where, "id", "int")
        image_id = field(path, record, where, "image_id", "int")
        caption = field(path, record, where, "caption", "str")
        if image_id not in images:
            skips.add("caption of an image id the file does not list", f"{path.name}: {where}.image_id {image_id}")
            continue
        images[image_id]["captions"].append(caption)
    return captioned(images, path.name, skips)


def captioned(images: dict[int, dict[str, Any]], source: str, skips: Skips) -> list[CaptionedImage]:
    found = []
    for image_id in sorted(images):
        image = images[image_id]
        captions = worded(image["captions"], f"{source} image {image_id}", skips)
        if not captions:
            skips.add("image without captions", f"{source}: image {image_id} ({image['file']})")
            continue
        found.append(CaptionedImage(image_id, image["file"], captions, image["width"], image["height"]))
    return found


def read_karpathy(path: Path, skips: Skips) -> dict[str, list[CaptionedImage]]:
    data = read_json_file(path, max_bytes=MAX_ANNOTATION_BYTES)
    splits: dict[str, dict[int, dict[str, Any]]] = {split: {} for split in SPLITS}
    seen: set[int] = set()
    for index, record in enumerate(field(path, data, "", "images", "list")):
        where = f"images[{index}]"
        split = field(path, record, where, "split", "str")
        if split not in KARPATHY_SPLITS:
            raise StrideError(f"{path}: {where}.split is {split!r}, expected one of {', '.join(KARPATHY_SPLITS)}")
        image_id = field(path, record, where, "cocoid", "int")
        if image_id in seen:
            raise StrideError(f"{path}: {where}.cocoid {image_id} repeats an earlier image's cocoid")
        seen.add(image_id)
        file = f"{field(path, record, where, 'filepath', 'name')}/{field(path, record, where, 'filename', 'name')}"
        captions = []
        for number, sentence in enumerate(field(path, record, where, "sentences", "list")):
            captions.append(field(path, sentence, f"{where}.sentences[{number}]", "raw", "str"))
            if "tokens" in sentence:  # checked, not used: every dataset is tokenized by the same rule
                tokens = field(path, sentence, f"{where}.sentences[{number}]", "tokens", "list")
                if not all(isinstance(token, str) for token in tokens):
                    raise StrideError(f"{path}: {where}.sentences[{number}].tokens must be a list of strings")
        splits[KARPATHY_SPLITS[split]][image_id] = {"file": file, "width": None, "height": None, "captions": captions}
    return {split: captioned(images, path.name, skips) for split, images in splits.items()}


def find_official(source: Path) -> tuple[str, dict[str, Path]]:
    """(year, {"train": annotation file, "val": annotation file}) of the layout found under `source`."""
    if not source.is_dir():
        raise StrideError(f"--source {source} is not a folder (expected the COCO layout: train2014/, val2014/ and "
                          "annotations/captions_train2014.json, captions_val2014.json, or the 2017 names)")
    for year in YEARS:
        files = {split: source / "annotations" / f"captions_{split}{year}.json" for split in ("train", "val")}
        present = [split for split, file in files.items() if file.is_file()]
        if not present:
            continue
        for split, file in files.items():
            if split not in present:
                raise StrideError(f"{file}: missing (found {files[present[0]].name})")
            if not (source / f"{split}{year}").is_dir():
                raise StrideError(f"{source / f'{split}{year}'}: image folder missing (beside {file})")
        others = [year_ for year_ in YEARS if year_ != year and (source / "annotations" /
                                                                 f"captions_train{year_}.json").is_file()]
        if others:
            log.info("%s holds COCO %s and %s captions; using %s", source, year, others[0], year)
        return year, files
    raise StrideError(f"{source}: no COCO caption annotations found; expected annotations/captions_train2014.json "
                      "and captions_val2014.json beside train2014/ and val2014/ (or the 2017 names)")


def find_image_folders(source: Path) -> tuple[str, dict[str, Path]]:
    """(year, {"train": train folder, "val": val folder}) of the official image folders under `source`, annotations
    not needed; both of one year (the 2017 split re-divides the 2014 images, so years never mix)."""
    if not source.is_dir():
        raise StrideError(f"--source {source} is not a folder (expected COCO's train2014/ and val2014/, or the 2017 "
                          "names)")
    for year in YEARS:
        folders = {split: source / f"{split}{year}" for split in ("train", "val")}
        found = [split for split, folder in folders.items() if folder.is_dir()]
        if not found:
            continue
        if len(found) == 1:
            missing = folders["val" if found == ["train"] else "train"]
            raise StrideError(f"{missing}: image folder missing (beside {folders[found[0]]})")
        return year, folders
    raise StrideError(f"{source}: no COCO image folders found; expected train2014/ and val2014/ (or train2017/ and "
                      "val2017/) of JPEG images")


def present(images: list[CaptionedImage], source: Path, skips: Skips) -> list[CaptionedImage]:
    found = []
    for image in images:
        if (source / image.file).is_file():
            found.append(image)
        else:
            skips.add("image file missing", str(source / image.file))
    return found


# -- reading the images and writing the dataset ------------------------------------------------

COCO_IMAGES = ImageRules(formats=("JPEG", "PNG"), kept_modes=("RGB", "L"))  # a PNG under a .jpg name is re-encoded


def read_coco_image(path: Path, with_sums: bool) -> ReadImage | UnusableImage:
    """The image at `path`, or why it cannot be used: such an image is counted and left out, not an error."""
    try:
        return decode_image(path.read_bytes(), str(path), COCO_IMAGES, with_sums)
    except OSError as err:
        return UnusableImage(str(path), "image file unreadable", str(err.strerror))
    except UnusableImage as err:
        return err


def check_vocabulary(vocabulary: Vocabulary, dataset: str, min_count: int) -> None:
    if len(vocabulary) <= 2:
        raise StrideError(f"{dataset}: no training word occurs more than min_count={min_count} times, so the "
                          "vocabulary would hold only <EOS> and <UKN>; lower the threshold (--min-count)")


def constant_caption(captions: list[str]) -> str:
    """The baseline that says the same thing of every image: the most frequent training caption (as tokenised
    words; ties to the alphabetically first). A captioner must score far above it."""
    counts = Counter(" ".join(tokenize(caption)) for caption in captions)
    return min(counts, key=lambda caption: (-counts[caption], caption)) if counts else ""


def write_caption_dataset(out: str | Path, splits: dict[str, list[CaptionedImage]], root: Path, *, dataset: str,
                          source: dict[str, Any], parameters: dict[str, Any], skips: Skips, min_count: int,
                          samples_per_shard: int, overwrite: bool) -> Manifest:
    """Shards of (`jpg`, `json`) per image, the vocabulary of the training captions written, and the manifest."""
    # before anything is read or written: every training caption (a superset of those kept) gives no word either
    check_vocabulary(Vocabulary.build((c for i in splits["train"] for c in i.captions), min_count), dataset, min_count)
    pixels, converted = PixelSums.empty(), 0
    train_captions: list[str] = []
    with ShardWriter(out, samples_per_shard=samples_per_shard, overwrite=overwrite) as writer:
        with tqdm(total=sum(map(len, splits.values())), desc=f"writing {dataset} shards", unit="img") as progress:
            for split in SPLITS:
                images = splits[split]
                written = 0
                paths = (root / image.file for image in images)
                reads = read_in_order(partial(read_coco_image, with_sums=split == "train"), paths)
                for image, read in zip(images, reads):
                    progress.update()
                    if isinstance(read, UnusableImage):
                        skips.add(read.reason, str(root / image.file))
                        continue
                    if image.width is not None and (image.width, image.height) != (read.width, read.height):
                        skips.add("image size differs from its annotation",
                                  f"{root / image.file}: {read.width} x {read.height}, annotated "
                                  f"{image.width} x {image.height}")
                        continue
                    record = {"image_id": image.image_id, "file": image.file, "width": read.width,
                              "height": read.height, "captions": list(image.captions)}
                    writer.add(split, f"{image.image_id:012d}",
                               {"jpg": read.payload, "json": json.dumps(record, ensure_ascii=False).encode("utf-8")})
                    converted += read.re_encoded
                    written += 1
                    if split == "train":
                        assert read.sums is not None  # the train split is read with_sums
                        pixels.merge(read.sums)
                        train_captions.extend(image.captions)
                if not written:
                    raise StrideError(f"{dataset}: the {split} split has no usable images "
                                      f"(left out: {dict(skips.counts) or 'none listed'})")
        skips.log(dataset)
        if converted:
            log.warning("%s: %d image(s) were not RGB or grayscale JPEGs and were re-encoded as RGB JPEGs",
                        dataset, converted)
        vocabulary = Vocabulary.build(train_captions, min_count)
        check_vocabulary(vocabulary, dataset, min_count)
        writer.add_file(VOCABULARY_FILE, vocabulary.to_bytes())
        return writer.commit(
            dataset=dataset, task="captioning", source={**source, "re_encoded_images": converted},
            parameters={**parameters, "min_count": min_count, "samples_per_shard": samples_per_shard,
                        "vocabulary": {"file": VOCABULARY_FILE, "sha256": vocabulary.sha256, "size": len(vocabulary),
                                       "min_count": min_count},
                        "constant_caption": constant_caption(train_captions)},
            sample_schema={"jpg": {"role": "image", "dtype": "uint8",
                                   "layout": "JPEG as distributed (RGB or grayscale), any size"},
                           "json": {"role": "captions", "keys": ["image_id", "file", "width", "height", "captions"]}},
            class_names=[], stats=pixels.stats(), skipped_samples=dict(skips.counts))


def official_splits(source: Path, val_size: int, seed: int,
                    skips: Skips) -> tuple[dict[str, list[CaptionedImage]], dict[str, Any]]:
    year, files = find_official(source)
    train = present(read_official(files["train"], f"train{year}", skips), source, skips)
    test = present(read_official(files["val"], f"val{year}", skips), source, skips)
    if not 0 < val_size < len(train):
        raise StrideError(f"--val-size must be between 1 and {len(train) - 1} (the usable train{year} images), "
                          f"got {val_size}")
    kept, held_out = deterministic_split(len(train), val_size, seed)
    described = {"kind": "coco-captions", "path": str(source.absolute()), "year": year,
                 "annotations": [f"annotations/{file.name}" for file in files.values()],
                 "splits": {"train": f"train{year} minus val", "val": f"{val_size} images held out of train{year}",
                            "test": f"val{year}"}}
    return {"train": [train[i] for i in kept], "val": [train[i] for i in held_out], "test": test}, described


def karpathy_splits(source: Path, split_file: Path,
                    skips: Skips) -> tuple[dict[str, list[CaptionedImage]], dict[str, Any]]:
    if not source.is_dir():
        raise StrideError(f"--source {source} is not a folder (expected the COCO image folders)")
    splits = {name: present(images, source, skips) for name, images in read_karpathy(split_file, skips).items()}
    described = {"kind": "coco-captions-karpathy", "path": str(source.absolute()), "karpathy_split": str(split_file),
                 "karpathy_sha256": sha256_of(split_file), "splits": {"train": "train + restval", "val": "val",
                                                                      "test": "test"}}
    return splits, described


def prepare_coco_captions(source: str | Path, out: str | Path, *, karpathy_split: str | Path | None = None,
                          val_size: int = 5000, seed: int = 0, min_count: int = 5, samples_per_shard: int = 5000,
                          overwrite: bool = False) -> Manifest:
    """`val_size` and `seed` choose the held-out validation images; a Karpathy split names its own (they are unused)."""
    source, skips = Path(source), Skips()
    if karpathy_split is None:
        splits, described = official_splits(source, val_size, seed, skips)
    else:
        split_file = Path(karpathy_split)
        if not split_file.is_file() and (source / split_file).is_file():
            split_file = source / split_file  # a name relative to the source folder
        splits, described = karpathy_splits(source, split_file, skips)
    parameters = {"karpathy_split": None if karpathy_split is None else Path(karpathy_split).name,
                  "val_size": None if karpathy_split is not None else val_size,
                  "seed": None if karpathy_split is not None else seed}
    return write_caption_dataset(out, splits, source, dataset="coco_captions", source=described, parameters=parameters,
                                 skips=skips, min_count=min_count, samples_per_shard=samples_per_shard,
                                 overwrite=overwrite)
