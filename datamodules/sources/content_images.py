"""Content images of the stylization task (docs/datasets.md, "Stylization datasets").

Every content image is stored RGB, S x S: its shorter side resized to S, then centre-cropped (the
dissertation's preprocessing, docs/models.md, D). Three sources:

- `photos` (built-in, offline): random square crops at several scales, mirrored at random, of colour
  photographs shipped with scikit-image and scikit-learn, plus scenes of the shapes-captions generator.
  Validation and test crop other photographs than training does, and draw their own scenes, so they
  measure stylisation of content the network never saw.
- `image-folder`: every JPEG and PNG file under a folder, validation and test drawn from them (seeded).
- `coco-images`: COCO's official image folders; train from train2014/ (or train2017/), validation and
  test drawn from val2014/ (val2017/). Captions and annotations are not needed.

Files that do not decode are left out, counted in the manifest's `skipped_samples` and logged.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stride.datamodules.location import dataset_location
from stride.datamodules.manifest import Manifest
from stride.datamodules.sources.coco_captions import Skips, find_image_folders
from stride.datamodules.sources.images import UnusableImage
from stride.datamodules.sources.patches import PHOTOGRAPHS, Photograph, read_photograph, region_of
from stride.datamodules.sources.shapes_captions import draw, load_textures, random_scene
from stride.datamodules.sources.style_images import DEFAULT_STYLES, STYLE_SIZE_PX, StyleImage, load_styles
from stride.datamodules.stylization import SPLITS, write_stylization_dataset
from stride.errors import StrideError

CONTENT_SIZE_PX = 256  # the dissertation trains at 256 x 256 (docs/models.md, D)
BUILTIN_SIZE_PX = 96  # stride's choice: the built-in dataset trains in minutes on a CPU
MIN_SIZE_PX = 16  # stride's choice: the pastiche network halves the image twice (docs/models.md, D)
CONTENT_FORMATS = ("JPEG", "PNG")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
COCO_HELD_OUT = 500  # default validation and test images each, drawn from val2014/ (val2017/)

# skimage.data.cat() is chelsea's file, so it is listed once; colorwheel is the one synthetic image
PHOTOS = {photograph.name: photograph for photograph in
          (*PHOTOGRAPHS, Photograph("colorwheel", "skimage", "data/color.png", "skimage.data.colorwheel()"))}
SPLIT_PHOTOS = {"train": ("astronaut", "chelsea", "hubble_deep_field", "immunohistochemistry", "motorcycle", "retina",
                          "colorwheel"),
                "val": ("coffee", "china"), "test": ("rocket", "flower")}
CROP_SCALES = (0.4, 0.55, 0.75, 1.0)  # a crop's side, of the photograph's shorter side (never below S if it can be)
SCENE_SHARE = 0.25  # stride's choice: mostly photographs, which is what a stylised network is shown


def square_pixels(image: Image.Image, side: int) -> np.ndarray:
    """uint8 3 x side x side: the shorter side resized to `side` and the centre cropped (one resize of the square)."""
    rgb = image.convert("RGB")
    short = min(rgb.size)
    left, top = (rgb.width - short) // 2, (rgb.height - short) // 2
    square = rgb.resize((side, side), Image.Resampling.BILINEAR, box=(left, top, left + short, top + short))
    return np.asarray(square).transpose(2, 0, 1).copy()


def read_content(path: Path, side: int) -> np.ndarray:
    """The image file as a content image, or an UnusableImage saying why not (counted and left out)."""
    try:
        payload = path.read_bytes()
    except OSError as err:
        raise UnusableImage(str(path), "image file unreadable", str(err.strerror)) from None
    try:
        with Image.open(io.BytesIO(payload), formats=list(CONTENT_FORMATS)) as image:
            image.draft("RGB", (side, side))  # a large JPEG decodes at 1/2, 1/4 or 1/8 scale, never below side
            return square_pixels(image, side)
    except UnidentifiedImageError:
        raise UnusableImage(str(path), "not a JPEG or PNG image", "its content is neither, whatever its name "
                            "says") from None
    except Exception as err:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise UnusableImage(str(path), "image file does not decode", f"{type(err).__name__}: {err}") from None


def usable_images(files: list[Path], side: int, skips: Skips) -> Iterator[np.ndarray]:
    for path in files:
        try:
            yield read_content(path, side)
        except UnusableImage as err:
            skips.add(err.reason, str(path))


def choose_held_out(files: list[Path], sizes: dict[str, int], seed: int, side: int,
                    skips: Skips) -> tuple[dict[str, list[Path]], set[Path]]:
    """Per held-out split in turn, the first `sizes[split]` files of a seeded order that decode (an unusable one is
    counted and the next taken), and every file looked at; fewer when the files run out."""
    order = iter(np.random.default_rng(seed).permutation(len(files)).tolist())
    chosen: dict[str, list[Path]] = {split: [] for split in sizes}
    examined: set[Path] = set()
    for split, size in sizes.items():
        while len(chosen[split]) < size and (index := next(order, None)) is not None:
            path = files[index]
            examined.add(path)
            try:
                read_content(path, side)
            except UnusableImage as err:
                skips.add(err.reason, str(path))
                continue
            chosen[split].append(path)
    return chosen, examined


def image_files(folder: Path, recursive: bool, exclude: Path | None = None) -> list[Path]:
    """JPEG and PNG files by name, sorted, hidden files and folders and anything under `exclude` left out."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in found if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
                  and not any(part.startswith(".") for part in path.relative_to(folder).parts)
                  and (exclude is None or exclude not in path.resolve().parents))


def check_sizes(image_size: int, **sizes: int | None) -> None:
    if image_size < MIN_SIZE_PX:
        raise StrideError(f"--image-size {image_size}: give at least {MIN_SIZE_PX} pixels")
    for option, size in sizes.items():
        if size is not None and size < 1:
            raise StrideError(f"--{option.replace('_', '-')} must be at least 1, got {size}")


# -- photos --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Crop:
    photo: str
    box: tuple[int, int, int, int]  # left, top, right, bottom, pixels of the photograph
    flip: bool


def photo_plan(split: str, size: int, seed: int, side: int,
               regions: dict[str, tuple[int, int, int, int]]) -> list[Crop | int]:
    """What each of the split's samples is, in a seeded order: a crop of one of its photographs, or a scene's
    number (a quarter of the samples)."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    scenes = round(size * SCENE_SHARE)
    plan: list[Crop | int] = list(range(scenes))
    names = SPLIT_PHOTOS[split]
    for number in range(size - scenes):
        name = names[number % len(names)]
        top, left, bottom, right = regions[name]
        short = min(bottom - top, right - left)
        crop = int(min(short, max(rng.choice(CROP_SCALES) * short, side)))
        x, y = int(rng.integers(left, right - crop + 1)), int(rng.integers(top, bottom - crop + 1))
        plan.append(Crop(name, (x, y, x + crop, y + crop), bool(rng.random() < 0.5)))
    return [plan[index] for index in rng.permutation(len(plan))]


def prepare_photos(out: str | Path, *, styles: str = DEFAULT_STYLES, image_size: int = BUILTIN_SIZE_PX,
                   style_size: int = STYLE_SIZE_PX, train_size: int = 480, val_size: int = 48, test_size: int = 48,
                   seed: int = 0, encoding: str = "png", samples_per_shard: int = 5000,
                   overwrite: bool = False) -> Manifest:
    check_sizes(image_size, train_size=train_size, val_size=val_size, test_size=test_size)
    chosen_styles = load_styles(styles, style_size)
    photos = {name: read_photograph(photograph, "RGB") for name, photograph in PHOTOS.items()}
    regions = {name: region_of(PHOTOS[name], np.asarray(photo)) for name, photo in photos.items()}
    textures = load_textures()
    sizes = {"train": train_size, "val": val_size, "test": test_size}
    plans = {split: photo_plan(split, sizes[split], seed, image_size, regions) for split in SPLITS}

    def images() -> Iterator[tuple[str, np.ndarray]]:
        for split, plan in plans.items():
            for item in plan:
                if isinstance(item, int):  # a scene drawn from its own seed: the same whatever the other samples
                    rng = np.random.default_rng([seed, SPLITS.index(split), 1, item])
                    image = draw(random_scene(image_size, rng), image_size, textures, rng)
                else:
                    image = photos[item.photo].resize((image_size, image_size), Image.Resampling.BILINEAR,
                                                      box=item.box)
                    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if item.flip else image
                yield split, np.asarray(image).transpose(2, 0, 1).copy()

    splits = {split: {"photographs": list(SPLIT_PHOTOS[split]),
                      "scenes": sum(isinstance(item, int) for item in plan), "samples": len(plan)}
              for split, plan in plans.items()}
    return write_stylization_dataset(
        out, dataset="photos", images=images(), styles=chosen_styles, total=sum(sizes.values()),
        source={"kind": "builtin", "built_from": "crops of colour photographs shipped with scikit-image and "
                "scikit-learn, and scenes of stride.datamodules.sources.shapes_captions; see docs/datasets.md",
                "held_out": "val and test crop photographs training never sees and draw their own scenes",
                "splits": splits,
                "photographs": {name: {"package": PHOTOS[name].package, "file": PHOTOS[name].file,
                                       "same_pixels_as": PHOTOS[name].loader,
                                       "size_hw": [photos[name].height, photos[name].width]} for name in PHOTOS}},
        parameters={"train_size": train_size, "val_size": val_size, "test_size": test_size, "seed": seed,
                    "image_size_px": image_size, "style_size_px": style_size, "crop_scales": list(CROP_SCALES),
                    "scene_share": SCENE_SHARE, "flip": "horizontal, p=0.5"},
        encoding=encoding, samples_per_shard=samples_per_shard, overwrite=overwrite)


# -- image files -------------------------------------------------------------------------------------------
def write_files(out: str | Path, files: dict[str, list[Path]], *, dataset: str, styles: list[StyleImage],
                image_size: int, style_size: int, skips: Skips, source: dict, parameters: dict, encoding: str,
                samples_per_shard: int, overwrite: bool, too_few: str) -> Manifest:
    """The splits' files decoded as content images and written; `too_few` begins the error when a split gets none."""
    def images() -> Iterator[tuple[str, np.ndarray]]:
        for split in SPLITS:
            written = 0
            for image in usable_images(files[split], image_size, skips):
                written += 1
                yield split, image
            if not written:
                raise StrideError(f"{too_few} (none for the {split} split; left out: {dict(skips.counts) or 'none'})")

    return write_stylization_dataset(
        out, dataset=dataset, images=images(), styles=styles, skips=skips,
        total=sum(map(len, files.values())), source=source,
        parameters={**parameters, "image_size_px": image_size, "style_size_px": style_size},
        encoding=encoding, samples_per_shard=samples_per_shard, overwrite=overwrite)


def prepare_image_folder(source: str | Path, out: str | Path, *, styles: str = DEFAULT_STYLES,
                         image_size: int = CONTENT_SIZE_PX, style_size: int = STYLE_SIZE_PX,
                         val_size: int | None = None, test_size: int | None = None, seed: int = 0,
                         encoding: str = "png", samples_per_shard: int = 5000, overwrite: bool = False) -> Manifest:
    """val and test: `val_size` and `test_size` files (default 10% each, at least 1) of a seeded order; train: the
    rest."""
    check_sizes(image_size, val_size=val_size, test_size=test_size)
    chosen_styles = load_styles(styles, style_size)  # before any image is read: a wrong style fails at once
    root = Path(source)
    if not root.is_dir():
        raise StrideError(f"--source {root}: not a folder (expected a folder of .jpg/.png images)")
    target = dataset_location(str(out)).local  # an earlier dataset written inside the folder is not content
    files = image_files(root, recursive=True, exclude=target.resolve() if target is not None else None)
    too_few = f"--source {root}: fewer than 3 usable .jpg/.png images; val, test and train need one each"
    if len(files) < 3:
        raise StrideError(f"{too_few} (found {len(files)})")
    sizes = {"val": val_size or max(1, round(0.1 * len(files))), "test": test_size or max(1, round(0.1 * len(files)))}
    if sizes["val"] + sizes["test"] >= len(files):
        raise StrideError(f"--source {root}: {len(files)} images cannot give {sizes['val']} to validation and "
                          f"{sizes['test']} to test and leave some to train on; lower --val-size/--test-size")
    skips = Skips()
    held_out, examined = choose_held_out(files, sizes, seed, image_size, skips)
    splits = {"train": [path for path in files if path not in examined], **held_out}
    return write_files(
        out, splits, dataset=root.name or "image-folder", styles=chosen_styles, image_size=image_size,
        style_size=style_size, skips=skips, too_few=too_few,
        source={"kind": "image-folder", "path": str(root.absolute()), "files": len(files),
                "splits": {"train": "the files not held out",
                           **{split: [str(p.relative_to(root)) for p in held] for split, held in held_out.items()}}},
        parameters={"val_size": sizes["val"], "test_size": sizes["test"], "seed": seed}, encoding=encoding,
        samples_per_shard=samples_per_shard, overwrite=overwrite)


def prepare_coco_images(source: str | Path, out: str | Path, *, styles: str = DEFAULT_STYLES,
                        image_size: int = CONTENT_SIZE_PX, style_size: int = STYLE_SIZE_PX,
                        val_size: int | None = None, test_size: int | None = None, seed: int = 0,
                        encoding: str = "png", samples_per_shard: int = 5000, overwrite: bool = False) -> Manifest:
    """train: every image of train2014/ (train2017/); val and test: images of val2014/ (val2017/), `val_size` and
    `test_size` (default 500 each, fewer if the folder holds fewer) of a seeded order."""
    check_sizes(image_size, val_size=val_size, test_size=test_size)
    chosen_styles = load_styles(styles, style_size)
    root = Path(source)
    year, folders = find_image_folders(root)
    train, pool = (image_files(folders[split], recursive=False) for split in ("train", "val"))
    sizes = {"val": val_size or min(COCO_HELD_OUT, max(1, len(pool) // 2))}
    sizes["test"] = test_size or min(COCO_HELD_OUT, len(pool) - sizes["val"])
    if min(sizes.values()) < 1 or sum(sizes.values()) > len(pool):
        raise StrideError(f"{folders['val']}: {len(pool)} images cannot give {sizes['val']} to validation and "
                          f"{sizes['test']} to test (one each at least); lower --val-size/--test-size")
    skips = Skips()
    held_out, _ = choose_held_out(pool, sizes, seed, image_size, skips)
    return write_files(
        out, {"train": train, **held_out}, dataset="coco_images", styles=chosen_styles, image_size=image_size,
        style_size=style_size, skips=skips, too_few=f"--source {root}: no usable COCO image",
        source={"kind": "coco-images", "path": str(root.absolute()), "year": year,
                "splits": {"train": f"train{year}", "val": f"{sizes['val']} images of val{year} (seeded)",
                           "test": f"{sizes['test']} other images of val{year} (seeded)"}},
        parameters={"val_size": sizes["val"], "test_size": sizes["test"], "seed": seed}, encoding=encoding,
        samples_per_shard=samples_per_shard, overwrite=overwrite)
