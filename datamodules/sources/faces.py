"""`faces`: built-in, offline face-detection data in the exact WIDER FACE layout.

Each image is a crop of a photograph shipped with scikit-image with 0..8 faces pasted on it:
the 100 face crops of `skimage.data.lfw_subset()` (25 x 25 greyscale, from Labeled Faces in
the Wild), resized to 10..96 px, tinted in skin-like colours, at random non-overlapping
positions. Its 100 non-face crops are pasted the same way as distractors, without a box, so
that a detector must tell a face from any pasted patch. Boxes are exact: a face fills its box.

- Generalisation, not memory: WIDER_train uses face crops 0..74, distractors 100..174 and the
  left 60% of every photograph; WIDER_val uses faces 75..99, distractors 175..199 and the right
  35%. (The subset does not say who is who, so one person may have crops on both sides.)
- Difficulty subsets, by face size (the shorter box side): hard counts every face, medium those
  of at least 16 px, easy those of at least 32 px (the official ones also weigh blur, pose and
  occlusion, which composed faces do not have).
- Attributes: blur from size (clear >= 32 px, normal >= 16 px, else heavy), illumination
  "extreme" for dark tints, the others 0 (typical expression, valid, unoccluded, frontal).

`write_composed_wider` writes the official files (images, both `_bbx_gt.txt`, the four
evaluation `.mat` files), so `prepare_faces` runs the real WIDER FACE converter end to end.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stride.datamodules.manifest import Manifest
from stride.datamodules.sources.patches import Photograph, photograph_path, read_photograph
from stride.datamodules.sources.wider_eval_mat import write_wider_eval
from stride.datamodules.sources.wider_face import ATTRIBUTES, prepare_wider_face

LFW = Photograph("lfw_subset", "skimage", "data/lfw_subset.npy", "skimage.data.lfw_subset()")
ASTRONAUT = Photograph("astronaut", "skimage", "data/astronaut.png", "skimage.data.astronaut()")
ASTRONAUT_FACE_BOX = (180, 76, 268, 180)  # x1, y1, x2, y2: forehead to chin, cheek to cheek, measured by eye
BACKGROUNDS = (*(Photograph(name, "skimage", f"data/{file}", f"skimage.data.{name}()") for name, file in (
    ("chelsea", "chelsea.png"), ("coffee", "coffee.png"), ("rocket", "rocket.jpg"),
    ("hubble_deep_field", "hubble_deep_field.jpg"), ("immunohistochemistry", "ihc.png"), ("brick", "brick.png"),
    ("grass", "grass.png"), ("gravel", "gravel.png"))),
    Photograph("motorcycle", "skimage", "data/motorcycle_left.png", "skimage.data.stereo_motorcycle()[0]"),
)  # not astronaut (kept for a real-photo test) nor camera: both show a person
TREES = {"train": "WIDER_train", "val": "WIDER_val"}
FACE_CROPS = {"train": range(0, 75), "val": range(75, 100)}
DISTRACTOR_CROPS = {"train": range(100, 175), "val": range(175, 200)}
BANDS = {"train": (0.0, 0.6), "val": (0.65, 1.0)}  # columns of each photograph, as fractions of its width
SKIN_TINTS = np.array([(1.0, 0.82, 0.68), (0.92, 0.7, 0.55), (0.75, 0.52, 0.38), (0.55, 0.38, 0.27),
                       (1.0, 0.9, 0.82)])
DARK_TINT = 0.6  # a tint whose brightest channel is below this counts as extreme illumination
SUBSET_MIN_SIDE_PX = {"easy": 32, "medium": 16, "hard": 0}
BLUR_MIN_SIDE_PX = ((32, 0), (16, 1), (0, 2))  # (shorter side at least, blur label)
MIN_FACE_PX = 10
JPEG_QUALITY = 92


@dataclass(frozen=True)
class Event:
    name: str  # "<id>--<Name>", as WIDER names its events
    faces: tuple[int, int]  # faces per image, inclusive
    side_px: tuple[int, int]  # face height range; clipped to the image
    distractors: tuple[int, int]


EVENTS = (Event("0--Composed", (1, 8), (MIN_FACE_PX, 96), (0, 3)),
          Event("1--Crowd", (5, 8), (MIN_FACE_PX, 24), (1, 3)),
          Event("2--Portrait", (1, 2), (40, 96), (0, 2)),
          Event("3--Group", (2, 5), (14, 48), (0, 3)))


@dataclass(frozen=True)
class Paste:
    box: tuple[int, int, int, int]  # x, y, w, h
    crop: int  # index into lfw_subset()
    tint: tuple[float, float, float]


@dataclass
class Composed:
    image: np.ndarray  # uint8 H x W x 3, the faces and distractors pasted
    background: np.ndarray  # uint8 H x W x 3, before pasting
    faces: list[Paste]
    distractors: list[Paste]
    photograph: str


class Assets:
    """The LFW crops and the background photographs, read once from the files scikit-image ships."""

    def __init__(self) -> None:
        self.crops = np.load(photograph_path(LFW), allow_pickle=False)  # 200 x 25 x 25 floats in [0, 1]
        self.photographs = {photograph.name: read_photograph(photograph, "RGB") for photograph in BACKGROUNDS}


def background_crop(assets: Assets, rng: np.random.Generator, split: str, width: int,
                    height: int) -> tuple[np.ndarray, str]:
    name = BACKGROUNDS[rng.integers(len(BACKGROUNDS))].name
    photograph = assets.photographs[name]
    start, stop = (round(f * photograph.width) for f in BANDS[split])
    zoom = min(rng.uniform(0.6, 2.0), (stop - start) / width, photograph.height / height)
    crop_w, crop_h = max(1, int(width * zoom)), max(1, int(height * zoom))
    left = start + int(rng.integers(stop - start - crop_w + 1))
    top = int(rng.integers(photograph.height - crop_h + 1))
    box = (left, top, left + crop_w, top + crop_h)
    region = photograph.crop(box).resize((width, height), Image.Resampling.BILINEAR)
    pixels: np.ndarray = np.asarray(region, dtype=np.float32)
    if name in ("brick", "grass", "gravel"):  # grey textures: give them a colour
        pixels = pixels * rng.uniform(0.6, 1.1, 3)
    return np.clip(pixels, 0, 255).astype(np.uint8), name


def render(assets: Assets, paste: Paste) -> np.ndarray:
    """The crop resized to its box and tinted: uint8 h x w x 3."""
    _, _, w, h = paste.box
    crop = Image.fromarray((assets.crops[paste.crop] * 255).astype(np.uint8))
    grey = crop.resize((w, h), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(grey, dtype=np.float32)[..., None] * np.array(paste.tint), 0, 255).astype(np.uint8)


def place(rng: np.random.Generator, taken: list[tuple[int, int, int, int]], width: int, height: int,
          side_px: tuple[int, int], tries: int = 30) -> tuple[int, int, int, int] | None:
    """A box of random size at a random free position (1 px apart from the others), or None."""
    high = min(side_px[1], int(0.8 * min(width, height)))
    low = min(side_px[0], high)
    h = int(np.exp(rng.uniform(np.log(low), np.log(high + 1))))  # log-uniform: as many small faces as large
    w = max(MIN_FACE_PX if h >= MIN_FACE_PX else 1, round(h * rng.uniform(0.78, 1.0)))  # faces: taller than wide
    for _ in range(tries):
        x, y = int(rng.integers(width - w + 1)), int(rng.integers(height - h + 1))
        if all(x + w + 1 <= ox or ox + ow + 1 <= x or y + h + 1 <= oy or oy + oh + 1 <= y
               for ox, oy, ow, oh in taken):
            return x, y, w, h
    return None


def tint(rng: np.random.Generator) -> tuple[float, float, float]:
    base = SKIN_TINTS[rng.integers(len(SKIN_TINTS))] * rng.uniform(0.6, 1.25)
    return tuple(np.clip(base * rng.uniform(0.9, 1.1, 3), 0.2, 1.4).round(4).tolist())


def compose_image(assets: Assets, rng: np.random.Generator, split: str, event: Event, width: int, height: int,
                  face_count: int | None = None) -> Composed:
    background, photograph = background_crop(assets, rng, split, width, height)
    image = background.copy()
    count = int(rng.integers(event.faces[0], event.faces[1] + 1)) if face_count is None else face_count
    pasted: dict[bool, list[Paste]] = {True: [], False: []}
    taken: list[tuple[int, int, int, int]] = []
    wanted = [True] * count + [False] * int(rng.integers(event.distractors[0], event.distractors[1] + 1))
    for is_face in wanted:
        box = place(rng, taken, width, height, event.side_px)
        if box is None:
            continue
        crops = FACE_CROPS[split] if is_face else DISTRACTOR_CROPS[split]
        paste = Paste(box, int(crops[rng.integers(len(crops))]), tint(rng))
        x, y, w, h = box
        image[y:y + h, x:x + w] = render(assets, paste)
        taken.append(box)
        pasted[is_face].append(paste)
    return Composed(image, background, pasted[True], pasted[False], photograph)


def face_line(paste: Paste) -> list[int]:
    """The ten integers of a `_bbx_gt.txt` face line."""
    side = min(paste.box[2:])
    blur = next(label for least, label in BLUR_MIN_SIDE_PX if side >= least)
    values = {"blur": blur, "expression": 0, "illumination": int(max(paste.tint) < DARK_TINT), "invalid": 0,
              "occlusion": 0, "pose": 0}
    return [*paste.box, *(values[name] for name in ATTRIBUTES)]


def bbx_gt_text(images: dict[str, list[Paste]]) -> str:
    """The official format, trailing space and N = 0 placeholder line included."""
    lines = []
    for file, faces in images.items():
        lines += [file, str(len(faces))]
        lines += [" ".join(map(str, face_line(face))) + " " for face in faces] or ["0 0 0 0 0 0 0 0 0 0 "]
    return "\n".join(lines) + "\n"


def write_composed_wider(folder: str | Path, *, seed: int = 0, train_images: int = 240, val_images: int = 60,
                         image_size_range: tuple[int, int] = (96, 192)) -> Path:
    """Write the WIDER FACE layout into `folder` (files already there are replaced); returns `folder`.

    Also writes `composition.json` (outside the official layout): per image the photograph and
    the LFW crops used, for provenance and tests.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    assets = Assets()
    composition: dict[str, Any] = {"seed": seed, "images": {}}
    annotations: dict[str, dict[str, list[Paste]]] = {}
    for split, count in (("train", train_images), ("val", val_images)):
        annotations[split] = {}
        for index in range(count):
            event = EVENTS[index % len(EVENTS)]
            width, height = (int(side) for side in rng.integers(image_size_range[0], image_size_range[1] + 1, 2))
            composed = compose_image(assets, rng, split, event, width, height,
                                     face_count=0 if index == count // 2 else None)  # one image without faces
            event_id, event_word = event.name.split("--")
            file = f"{event.name}/{event_id}_{event_word}_composed_{index}.jpg"
            path = folder / TREES[split] / "images" / file
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(composed.image).save(path, format="JPEG", quality=JPEG_QUALITY)
            annotations[split][file] = composed.faces
            composition["images"][f"{TREES[split]}/images/{file}"] = {
                "photograph": composed.photograph, "faces": [face.crop for face in composed.faces],
                "distractors": [{"box": list(d.box), "crop": d.crop} for d in composed.distractors]}
    split_folder = folder / "wider_face_split"
    split_folder.mkdir(parents=True, exist_ok=True)
    for split in annotations:
        (split_folder / f"wider_face_{split}_bbx_gt.txt").write_text(bbx_gt_text(annotations[split]))
    val = annotations["val"]
    write_wider_eval(folder / "eval_tools" / "ground_truth",
                     {file: np.array([face.box for face in faces]).reshape(-1, 4) for file, faces in val.items()},
                     {subset: {file: [min(face.box[2:]) >= least for face in faces] for file, faces in val.items()}
                      for subset, least in SUBSET_MIN_SIDE_PX.items()})
    (folder / "composition.json").write_text(json.dumps(composition, indent=1) + "\n")
    return folder


def prepare_faces(out: str | Path, *, seed: int = 0, val_size: int = 40, samples_per_shard: int = 1000,
                  overwrite: bool = False, raw_dir: str | Path | None = None, **sizes: Any) -> Manifest:
    """Compose the data (into `raw_dir`, else a temporary folder) and convert it like real WIDER FACE.

    `sizes`: `train_images`, `val_images`, `image_size_range` of `write_composed_wider`.
    """
    with tempfile.TemporaryDirectory(prefix="stride-faces-") as scratch:
        raw = write_composed_wider(raw_dir if raw_dir is not None else scratch, seed=seed, **sizes)
        return prepare_wider_face(raw, out, val_size=val_size, seed=seed, samples_per_shard=samples_per_shard,
                                  overwrite=overwrite, dataset="faces",
                                  provenance={"kind": "faces-composed", "seed": seed, "sizes": sizes,
                                              "raw_dir": str(Path(raw_dir).absolute()) if raw_dir else None,
                                              "faces": LFW.loader, "backgrounds": [p.loader for p in BACKGROUNDS]})


def astronaut_face() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """`skimage.data.astronaut()` (uint8 512 x 512 x 3) and its one face box x1, y1, x2, y2: a real-photo smoke test."""
    return np.asarray(read_photograph(ASTRONAUT, "RGB")), ASTRONAUT_FACE_BOX
