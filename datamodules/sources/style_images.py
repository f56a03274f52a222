"""The style images of a stylization dataset (docs/datasets.md, "Stylization datasets"): built-in or the user's files.

`--styles brick,grass,~/art/starry_night.jpg`: each item is a built-in style's name or an image file. A name
that is a built-in style is the built-in one (write `./brick` for a file called `brick`). Every style is
decoded to RGB (a grayscale texture becomes three equal channels) and shrunk, aspect kept, until its longer
side is at most `--style-size`; it is never enlarged (upsampling would only blur the strokes a style loss
measures). The dataset stores each as a PNG (`stride.datamodules.stylization` writes and checks them).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stride.datamodules.sources.patches import Photograph, read_photograph
from stride.datamodules.sources.shapes_captions import TEXTURES
from stride.errors import StrideError
from stride.names import safe_filename

# brick, grass, gravel: scikit-image's grey textures; stain: its immunohistochemistry slide, the colourful one
BUILTIN_STYLES: dict[str, Photograph] = {
    **{name: TEXTURES[name] for name in ("brick", "grass", "gravel")},
    "stain": Photograph("stain", "skimage", "data/ihc.png", "skimage.data.immunohistochemistry()")}
DEFAULT_STYLES = "brick,grass,gravel,stain"
STYLE_SIZE_PX = 256  # stride's choice: the content images' side in the dissertation's training (docs/models.md, D)
STYLE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")  # what Pillow may open a user's style file as
MAX_STYLE_FILE_BYTES = 256 << 20


@dataclass(frozen=True)
class StyleImage:
    name: str  # the class name: the built-in's name, or the file's stem made safe
    origin: str  # the built-in's loader, or the file's absolute path
    pixels: np.ndarray  # uint8 H x W x 3

    def png(self) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(self.pixels).save(buffer, format="PNG")
        return buffer.getvalue()


def shrunk(image: Image.Image, max_side_px: int) -> Image.Image:
    """`image` as RGB, its longer side at most `max_side_px`, aspect kept; never enlarged."""
    rgb = image.convert("RGB")
    scale = max_side_px / max(rgb.size)
    if scale >= 1:
        return rgb
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    return rgb.resize(size, Image.Resampling.LANCZOS)


def read_style_file(path: Path, max_side_px: int) -> np.ndarray:
    if (size := path.stat().st_size) > MAX_STYLE_FILE_BYTES:
        raise StrideError(f"--styles {path}: {size} bytes, more than the {MAX_STYLE_FILE_BYTES} a style image may have")
    try:
        with Image.open(path, formats=list(STYLE_FORMATS)) as image:
            return np.asarray(shrunk(image, max_side_px))
    except StrideError:
        raise
    except Exception as err:  # Pillow raises UnidentifiedImageError, OSError, ValueError, DecompressionBombError, ...
        raise StrideError(f"--styles {path}: not a readable {', '.join(STYLE_FORMATS)} image "
                          f"({type(err).__name__}: {err})") from None


def load_styles(spec: str, max_side_px: int = STYLE_SIZE_PX) -> list[StyleImage]:
    """The styles `--styles` lists, in its order; an item that is neither a built-in nor a file is an error."""
    if max_side_px < 16:
        raise StrideError(f"--style-size {max_side_px}: give at least 16 pixels")
    items = [item.strip() for item in spec.split(",")]
    if not any(items) or not all(items):
        raise StrideError(f"--styles {spec!r}: give a comma-separated list of built-in style names "
                          f"({', '.join(BUILTIN_STYLES)}) or image files, without empty items")
    styles = []
    for item in items:
        if item in BUILTIN_STYLES:
            photograph = BUILTIN_STYLES[item]
            pixels = np.asarray(shrunk(read_photograph(photograph, "RGB"), max_side_px))
            styles.append(StyleImage(item, photograph.loader, pixels))
            continue
        path = Path(item).expanduser()
        if not path.is_file():
            raise StrideError(f"--styles: {item!r} is neither a built-in style ({', '.join(BUILTIN_STYLES)}) nor an "
                              "image file" + (" (it is a folder)" if path.is_dir() else ""))
        styles.append(StyleImage(safe_filename(path.stem, "style"), str(path.absolute()),
                                 read_style_file(path, max_side_px)))
    names = [style.name for style in styles]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise StrideError(f"--styles {spec!r}: the style name(s) {', '.join(repeated)} come twice; each style is a "
                          "class and needs its own name (rename a file)")
    return styles
