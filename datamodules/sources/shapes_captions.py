"""`shapes-captions`: a built-in, offline captioning dataset in the exact MSCOCO layout.

Each image shows one or two coloured shapes (circle, square, triangle, diamond; small or
large) on a grey texture cropped from a photograph shipped with scikit-image (grass, gravel,
brick) or on a plain grey. Each has five captions from varied templates that say exactly what
is drawn: colours, shapes, sizes, where a lone shape is, how two shapes lie to each other, and
the background ("a small red circle to the left of a blue square", "there is a big green
triangle above a little yellow diamond on gravel"). Backgrounds are grey so that a colour word
always names a shape.

`write_shapes_coco` writes the official COCO files (train2014/, val2014/, annotations/
captions_*2014.json), so `prepare_shapes_captions` runs the same converter as real COCO.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stride.datamodules.manifest import Manifest
from stride.datamodules.sources.coco_captions import Skips, official_splits, write_caption_dataset
from stride.datamodules.sources.patches import Photograph, read_photograph

COLOURS = {"red": (215, 35, 35), "green": (35, 175, 55), "blue": (40, 75, 225), "yellow": (235, 215, 35),
           "purple": (145, 50, 195)}
KINDS = ("circle", "square", "triangle", "diamond")
RADIUS = {"small": 0.09, "large": 0.17}  # of the image side
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
TEXTURES = {name: Photograph(name, "skimage", f"data/{name}.png", f"skimage.data.{name}()")
            for name in ("grass", "gravel", "brick")}
BACKGROUND_WORDS = {"grass": ("on grass", "on the grass"), "gravel": ("on gravel", "on some gravel"),
                    "brick": ("on a brick wall", "in front of a brick wall"),
                    "plain": ("on a grey background", "on a plain background")}
GREY_RANGE = (70, 180)  # backgrounds stay grey and mid-bright: every shape colour stands out
ROWS, COLUMNS = ("top", "middle", "bottom"), ("left", "centre", "right")
CELL_CENTRES = (0.22, 0.5, 0.78)  # of the image side, per row or column
WHERE_WORDS: dict[tuple[str, ...], tuple[str, ...]] = {  # (row, column) of a lone shape -> phrases
    ("top", "left"): ("in the top left corner", "at the top left"),
    ("top", "centre"): ("at the top", "near the top"),
    ("top", "right"): ("in the top right corner", "at the top right"),
    ("middle", "left"): ("on the left", "at the left side"),
    ("middle", "centre"): ("in the centre", "in the middle"),
    ("middle", "right"): ("on the right", "at the right side"),
    ("bottom", "left"): ("in the bottom left corner", "at the bottom left"),
    ("bottom", "centre"): ("at the bottom", "near the bottom"),
    ("bottom", "right"): ("in the bottom right corner", "at the bottom right"),
}


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    x: float  # centre, pixels
    y: float


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]  # two shapes: the first is left of (or above) the second
    background: str
    layout: str  # "horizontal" or "vertical" for two shapes; "top left", ..., "middle centre" for one


# -- drawing -----------------------------------------------------------------------------------

def load_textures() -> dict[str, np.ndarray]:
    """The grey texture photographs as float arrays, read from the files scikit-image ships."""
    return {name: np.asarray(read_photograph(photograph, "L"), dtype=np.float32)
            for name, photograph in TEXTURES.items()}


def background(name: str, side: int, textures: dict[str, np.ndarray], rng: np.random.Generator) -> Image.Image:
    low, high = GREY_RANGE
    if name == "plain":
        return Image.new("RGB", (side, side), (int(rng.integers(low, high)),) * 3)
    texture = textures[name]
    crop = int(rng.integers(min(texture.shape) // 4, min(texture.shape) // 2))
    top, left = (int(rng.integers(0, extent - crop + 1)) for extent in texture.shape)
    patch = texture[top:top + crop, left:left + crop]
    span = max(float(patch.max() - patch.min()), 1.0)
    grey = low + (patch - patch.min()) * ((high - low) / span)
    resized = Image.fromarray(grey.astype(np.uint8)).resize((side, side), Image.Resampling.BILINEAR)
    return resized.convert("RGB")


def outline(shape: Shape, side: int) -> tuple[str, list[tuple[float, float]]]:
    """(PIL drawing call, points) of a shape; the square is a little smaller so that areas are similar."""
    r, x, y = RADIUS[shape.size] * side, shape.x, shape.y
    if shape.kind == "circle":
        return "ellipse", [(x - r, y - r), (x + r, y + r)]
    if shape.kind == "square":
        half = 0.85 * r
        return "rectangle", [(x - half, y - half), (x + half, y + half)]
    if shape.kind == "triangle":
        return "polygon", [(x, y - r), (x + r, y + 0.8 * r), (x - r, y + 0.8 * r)]
    return "polygon", [(x, y - r), (x + r, y), (x, y + r), (x - r, y)]  # diamond


def draw(scene: Scene, side: int, textures: dict[str, np.ndarray], rng: np.random.Generator) -> Image.Image:
    image = background(scene.background, side, textures, rng)
    pen = ImageDraw.Draw(image)
    for shape in scene.shapes:
        call, points = outline(shape, side)
        getattr(pen, call)(points, fill=COLOURS[shape.colour])
    return image


# -- scenes ------------------------------------------------------------------------------------

def random_scene(side: int, rng: np.random.Generator) -> Scene:
    backdrop = str(rng.choice([*TEXTURES, "plain"]))
    colours = rng.choice(list(COLOURS), size=2, replace=False)

    def shape(colour: str, x: float, y: float) -> Shape:
        return Shape(str(rng.choice(KINDS)), str(colour), str(rng.choice(list(RADIUS))), x * side, y * side)

    if rng.random() < 0.4:
        row, column = int(rng.integers(3)), int(rng.integers(3))
        x, y = (CELL_CENTRES[i] + rng.uniform(-0.03, 0.03) for i in (column, row))
        return Scene((shape(colours[0], x, y),), backdrop, f"{ROWS[row]} {COLUMNS[column]}")
    # the first shape in the left (upper) 30 %, the second in the right (lower) 30 %: never overlapping
    first, second, across = rng.uniform(0.18, 0.30), rng.uniform(0.70, 0.82), rng.uniform(0.3, 0.7, size=2)
    if rng.random() < 0.5:
        return Scene((shape(colours[0], first, across[0]), shape(colours[1], second, across[1])), backdrop,
                     "horizontal")
    return Scene((shape(colours[0], across[0], first), shape(colours[1], across[1], second)), backdrop, "vertical")


Template = Callable[[Callable[[int], str], str, str], str]  # (noun phrase of shape i, where, background) -> text
SINGLE: tuple[Template, ...] = (
    lambda a, where, bg: f"{a(0)} {where}",
    lambda a, where, bg: f"there is {a(0)} {where}",
    lambda a, where, bg: f"{a(0)} {bg}",
    lambda a, where, bg: f"a picture of {a(0)} {where}",
    lambda a, where, bg: f"{a(0)} {where} {bg}",
    lambda a, where, bg: f"{a(0)} alone {bg}",
)
HORIZONTAL: tuple[Template, ...] = (
    lambda a, where, bg: f"{a(0)} to the left of {a(1)}",
    lambda a, where, bg: f"{a(1)} to the right of {a(0)}",
    lambda a, where, bg: f"there is {a(0)} left of {a(1)}",
    lambda a, where, bg: f"{a(0)} on the left and {a(1)} on the right",
    lambda a, where, bg: f"{a(0)} and {a(1)} side by side {bg}",
    lambda a, where, bg: f"{a(1)} right of {a(0)} {bg}",
)
VERTICAL: tuple[Template, ...] = (
    lambda a, where, bg: f"{a(0)} above {a(1)}",
    lambda a, where, bg: f"{a(1)} below {a(0)}",
    lambda a, where, bg: f"there is {a(0)} above {a(1)}",
    lambda a, where, bg: f"{a(0)} at the top and {a(1)} at the bottom",
    lambda a, where, bg: f"{a(1)} under {a(0)} {bg}",
    lambda a, where, bg: f"{a(0)} over {a(1)} {bg}",
)


def captions_of(scene: Scene, rng: np.random.Generator, count: int = 5) -> list[str]:
    """`count` different true descriptions, from different templates, words varied."""
    def noun_phrase(index: int) -> str:
        shape = scene.shapes[index]
        size = f"{rng.choice(SIZE_WORDS[shape.size])} " if rng.random() < 0.8 else ""
        return f"a {size}{shape.colour} {shape.kind}"

    templates = {"horizontal": HORIZONTAL, "vertical": VERTICAL}.get(scene.layout, SINGLE)
    where = str(rng.choice(WHERE_WORDS.get(tuple(scene.layout.split()), ("",))))
    captions = []
    for index in rng.choice(len(templates), size=count, replace=False):
        text = templates[index](noun_phrase, where, str(rng.choice(BACKGROUND_WORDS[scene.background])))
        text = text[0].upper() + text[1:]  # like COCO's: capitalised, sometimes a full stop
        captions.append(text + "." if rng.random() < 0.5 else text)
    return captions


# -- the COCO files ----------------------------------------------------------------------------

def coco_file(folder: str, image_id: int) -> str:
    return f"{folder}/COCO_{folder}_{image_id:012d}.jpg"


def write_shapes_coco(folder: str | Path, *, seed: int = 0, train_images: int = 2000, val_images: int = 250,
                      image_size: int = 64) -> dict[int, Scene]:
    """Write the scenes in the official COCO 2014 layout under `folder`; returns the scene of each image id."""
    if min(train_images, val_images) < 1 or image_size < 16:
        raise ValueError("shapes-captions needs at least one train and one val image, each at least 16 px")
    folder, rng, textures = Path(folder), np.random.default_rng(seed), load_textures()
    ids = (rng.choice(999_999, size=train_images + val_images, replace=False) + 1).tolist()  # scattered, like COCO's
    scenes, annotation_id = {}, 1
    for split, split_ids in (("train", ids[:train_images]), ("val", ids[train_images:])):
        name = f"{split}2014"
        (folder / name).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for image_id in split_ids:
            scene = random_scene(image_size, rng)
            buffer = io.BytesIO()
            draw(scene, image_size, textures, rng).save(buffer, format="JPEG", quality=92)
            file = coco_file(name, image_id)
            (folder / file).write_bytes(buffer.getvalue())
            images.append({"license": 1, "file_name": Path(file).name, "coco_url": "", "height": image_size,
                           "width": image_size, "date_captured": "2024-01-01 00:00:00", "flickr_url": "",
                           "id": image_id})
            for caption in captions_of(scene, rng):
                annotations.append({"image_id": image_id, "id": annotation_id, "caption": caption})
                annotation_id += 1
            scenes[image_id] = scene
        (folder / "annotations").mkdir(exist_ok=True)
        (folder / "annotations" / f"captions_{name}.json").write_text(json.dumps({
            "info": {"description": "stride shapes-captions (generated)", "url": "", "version": "1.0",
                     "year": 2014, "contributor": "stride", "date_created": "2024-01-01"},
            "licenses": [{"url": "", "id": 1, "name": "generated; textures from scikit-image's sample data"}],
            "images": images, "annotations": annotations}))
    return scenes


def prepare_shapes_captions(out: str | Path, *, seed: int = 0, val_size: int = 250, samples_per_shard: int = 1000,
                            overwrite: bool = False, raw_dir: str | Path | None = None, min_count: int = 5,
                            train_images: int = 2000, val_images: int = 250, image_size: int = 64) -> Manifest:
    """Generate the COCO files (in `raw_dir`, else a temporary folder) and convert them like real COCO.

    Splits: train = `train_images` - `val_size`, val = `val_size` held out of them, test = `val_images`.
    """
    sizes = {"train_images": train_images, "val_images": val_images, "image_size": image_size}
    with tempfile.TemporaryDirectory(prefix="stride-shapes-captions-") as scratch:
        raw = Path(raw_dir) if raw_dir is not None else Path(scratch)
        write_shapes_coco(raw, seed=seed, **sizes)
        skips = Skips()
        splits, _ = official_splits(raw, val_size, seed, skips)
        return write_caption_dataset(
            out, splits, raw, dataset="shapes_captions",
            source={"kind": "shapes-captions", "generator": "stride.datamodules.sources.shapes_captions",
                    "raw_dir": str(Path(raw_dir).absolute()) if raw_dir is not None else None,
                    "layout": "COCO 2014", "textures": {name: p.loader for name, p in TEXTURES.items()}},
            parameters={"seed": seed, "val_size": val_size, **sizes}, skips=skips, min_count=min_count,
            samples_per_shard=samples_per_shard, overwrite=overwrite)
