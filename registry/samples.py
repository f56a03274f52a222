"""Example inputs for `stride predict`: a dataset's first test samples written as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from stride.datamodules.image_classification import image_field
from stride.datamodules.manifest import read_manifest
from stride.datamodules.streaming import decode_member, iter_shard
from stride.errors import StrideError
from stride.names import inside, safe_filename


def write_sample_images(dataset: str | Path, out_dir: str | Path, count: int = 4,
                        split: str = "test") -> list[tuple[Path, str]]:
    """Write the first `count` images of `split` as PNG; return (path, true class name) pairs."""
    dataset, out_dir = Path(dataset), Path(out_dir)
    manifest = read_manifest(dataset)
    ext = image_field(manifest.sample_schema, str(dataset / "manifest.json"))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, str]] = []
    for shard in manifest.split(split).shards:
        for key, members in iter_shard(dataset / shard.name, (ext, "cls")):
            pixels = np.asarray(decode_member(ext, members[ext]), dtype=np.uint8)  # C x H x W
            label = decode_member("cls", members["cls"])
            name = manifest.class_names[label] if 0 <= label < len(manifest.class_names) else str(label)
            # key and class name come from the data: one safe file name (e.g. `T-shirt/top` -> `T-shirt_top`)
            path = inside(out_dir, out_dir / f"{safe_filename(key)}-{safe_filename(name)}.png")
            Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)).save(path)
            written.append((path, name))
            if len(written) == count:
                return written
    if not written:
        raise StrideError(f"{dataset}: split {split!r} has no samples")
    return written
