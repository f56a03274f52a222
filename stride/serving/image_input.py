"""Users' image files as a network's input: the one reader behind every task's `stride predict` and `stride explain`.

A file is opened only by the decoder its suffix names (`Image.open(formats=[...])`), so a file of
another kind under an image's name (an EPS, which Pillow would hand to Ghostscript) is refused unread.
Pixels become float32 in [0, 1] by the depth they were stored with, whatever mode Pillow hands back:

    1, L, RGB                    / 255, as the stored training images are scaled
    P                            palette expanded (to RGBA where it marks a colour transparent)
    RGBA, LA, PA, RGBa, La       composited on black, then / 255 (also L or RGB with a transparent colour)
    CMYK, YCbCr, HSV             Pillow's conversion to RGB, then / 255
    I;16, I;16B, I;16L, I;16N    / 65535 (16-bit PNG and TIFF)
    F                            as stored (32-bit float TIFF), if every pixel is finite and in [0, 1]; else refused
    I                            refused (32-bit integers): nothing says which value is white

Black under transparency is stride's choice: it is what detection's letterbox pads with and the
background of the digits datasets, so a transparent margin reads as the empty background the models
were trained on. 16-bit and float images are resized as floats (a transparent grey level of a 16-bit
PNG is not applied); the rest as 8-bit images, as before, so 8-bit files read as they always have.
Pillow itself hands back 16-bit colour PNGs as 8-bit RGB.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stride.errors import StrideError

# suffix -> the only Pillow decoder that may open it
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
CHANNEL_MODES = {1: "L", 3: "RGB"}
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_FORMATS


def unsupported_file(path: Path, others: tuple[str, ...] = ()) -> StrideError:
    """The error for a file of another type, naming the suffixes accepted (the images', and `others`)."""
    return StrideError(f"{path}: unsupported file type {path.suffix or '(none)'} (use "
                      f"{', '.join([*IMAGE_FORMATS, *others])})")


@contextmanager
def open_image(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """The image with only its header read, after checking that its content is what its suffix says and
    that it has at most `max_pixels` pixels; decoding errors in the `with` body name the file too."""
    if not is_image_file(path):
        raise unsupported_file(path)
    decoder = IMAGE_FORMATS[path.suffix.lower()]
    pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels  # PIL checks the header against it
    try:
        with Image.open(path, formats=[decoder]) as image:
            if image.width * image.height > max_pixels:
                raise StrideError(f"{path}: {image.width} x {image.height} pixels, more than the limit of "
                                  f"{max_pixels:,} (a decompression bomb?); raise --max-pixels if it is real")
            yield image
    except Image.DecompressionBombError as err:  # PIL's own limit, checked while reading the header
        raise StrideError(f"{path}: refused as a decompression bomb ({err}); "
                          "raise --max-pixels if it is real") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise StrideError(f"{path}: not a readable {decoder} image ({err})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit


def image_size(path: Path, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the header only."""
    with open_image(path, max_pixels) as image:
        return image.width, image.height


def read_image(path: Path, shape: tuple[int, ...], max_pixels: int) -> np.ndarray:
    """The image as a C x H x W float32 array in [0, 1] (`shape`: 1 grey or 3 RGB channels), resized
    bilinearly to H x W."""
    if len(shape) != 3 or shape[0] not in CHANNEL_MODES:
        raise StrideError(f"{path}: the model takes inputs of shape {list(shape)}, not images (1 or 3 x H x W); "
                          "give a .npy array of that shape")
    channels, height, width = shape
    with open_image(path, max_pixels) as image:
        if image.mode in SIXTEEN_BIT_MODES or image.mode in ("F", "I"):
            plane = Image.fromarray(unit_plane(path, image)).resize((width, height), Image.Resampling.BILINEAR)
            return np.repeat(np.asarray(plane, dtype=np.float32)[None], channels, axis=0)
        converted = eight_bit(path, image, CHANNEL_MODES[channels]).resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(converted, dtype=np.float32) / 255.0
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def unit_plane(path: Path, image: Image.Image) -> np.ndarray:
    """A 16-bit or float single-channel image as H x W float32 in [0, 1]; 32-bit integers are refused."""
    if image.mode in SIXTEEN_BIT_MODES:
        return np.asarray(image, dtype=np.float32) / 65535.0
    if image.mode == "I":
        raise StrideError(f"{path}: 32-bit integer pixels (mode I) have no known white level; save the image with "
                          "8 or 16 bits per channel, or give a .npy of the model's input")
    plane = np.asarray(image, dtype=np.float32)
    if not np.isfinite(plane).all():
        raise StrideError(f"{path}: float pixels include NaN or infinity")
    if plane.size and (plane.min() < 0 or plane.max() > 1):
        raise StrideError(f"{path}: float pixels range over [{plane.min():g}, {plane.max():g}]; stride reads float "
                          "images as intensities in [0, 1] (scale them, or give a .npy of the model's input)")
    return plane


def eight_bit(path: Path, image: Image.Image, mode: str) -> Image.Image:
    """An 8-bit image in `mode` (L or RGB): palettes expanded, transparency composited on black."""
    try:
        if image.has_transparency_data:
            coloured = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", coloured.size, (0, 0, 0, 255)), coloured)
        elif image.mode not in CHANNEL_MODES.values():
            image = image.convert("RGB")
        return image.convert(mode)
    except ValueError as err:  # a mode Pillow cannot convert (LAB)
        raise StrideError(f"{path}: pixel mode {image.mode} cannot be read as {mode} ({err})") from None
