"""The image files of a source (COCO captions, WIDER FACE): opened as the formats the dataset has, decoded once.

Pillow is given the formats each dataset distributes (`Image.open(..., formats=...)`): without
that list it tries every plugin it has, so an EPS file named `.jpg` has it look for Ghostscript,
and TIFF or WebP content under an image name is accepted. Every file is decoded in full (a
truncated one fails here, not in training), re-encoded as an RGB JPEG when it is not a JPEG of
a mode the loaders read, and can add its pixels to the training split's statistics.
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from stride.datamodules.pixel_stats import PixelSums
from stride.errors import StrideError

READ_WORKERS = min(8, os.cpu_count() or 1)  # Pillow and numpy release the GIL while decoding
JPEG_QUALITY = 95
Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class ReadImage:
    payload: bytes  # JPEG bytes: as distributed, or re-encoded
    width: int
    height: int
    re_encoded: bool
    sums: PixelSums | None  # the pixels sampled for the statistics, if asked for


class UnusableImage(StrideError):
    """An image file that cannot be used; `reason` is the short phrase skipped files are counted under."""

    def __init__(self, where: str, reason: str, detail: str):
        super().__init__(f"{where}: {reason} ({detail})")
        self.reason = reason


@dataclass(frozen=True)
class ImageRules:
    """What a dataset's image files may be: the formats Pillow may open, the JPEG modes kept as they are, and
    the grid of pixels its statistics sample (every `stats_grid_px`-th row and column)."""

    formats: tuple[str, ...]
    kept_modes: tuple[str, ...]
    stats_grid_px: int = 1


def decode_image(payload: bytes, where: str, rules: ImageRules, with_sums: bool) -> ReadImage:
    """The file's bytes checked to decode (re-encoded if they must be); an UnusableImage naming `where` if not."""
    try:
        with Image.open(io.BytesIO(payload), formats=list(rules.formats)) as image:
            re_encoded = image.format != "JPEG" or image.mode not in rules.kept_modes
            rgb = image.convert("RGB")  # decodes every pixel: a truncated file fails here
    except UnidentifiedImageError:
        raise UnusableImage(where, f"not a {' or '.join(rules.formats)} image", "its content is none of these "
                            "formats, whatever its name says") from None
    except Exception as err:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise UnusableImage(where, "image file does not decode", f"{type(err).__name__}: {err}") from None
    if re_encoded:
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        payload = buffer.getvalue()
    sums = None
    if with_sums:
        sums = PixelSums.empty()
        sums.add(np.asarray(rgb)[::rules.stats_grid_px, ::rules.stats_grid_px], channel_axis=-1)
    return ReadImage(payload, rgb.width, rgb.height, re_encoded, sums)


def read_in_order(read: Callable[[Item], Result], items: Iterable[Item], window: int = 64) -> Iterator[Result]:
    """`read` of each item, in order, a few in parallel but never more than `window` held at once."""
    with ThreadPoolExecutor(READ_WORKERS) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(read, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
