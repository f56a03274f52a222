"""Your own faces (or any images of identities) for the embedding task: `root/<identity>/*.jpg|png`.

Identities, not images, are split (seeded): the validation and test identities are never trained on, as
in verification of people the network has not seen (docs/embedding.md). Their pairs are drawn in LFW's
10-fold structure (stride.datamodules.embedding.generate_pairs). Images are centre-cropped to a square and
resized to `size_px` (stride's choice: aligned face crops are square already).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stride.datamodules.embedding import drawn_pairs, write_embedding_dataset
from stride.datamodules.manifest import Manifest
from stride.errors import StrideError

FACE_SIZE_PX = 64  # default side of stored faces: small enough to train on a CPU (stride's choice)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PAIRS_PER_FOLD = 300  # LFW's


def load_face(payload: bytes, where: str, size_px: int, crop_fraction: float = 1.0) -> np.ndarray:
    """uint8 RGB 3 x size x size: the central square of side `crop_fraction` x the shorter side, resized."""
    try:
        with Image.open(io.BytesIO(payload), formats=["JPEG", "PNG"]) as image:
            rgb = image.convert("RGB")
    except UnidentifiedImageError:
        raise StrideError(f"{where}: not a JPEG or PNG image") from None
    except Exception as err:  # Pillow raises OSError, ValueError, DecompressionBombError, ...
        raise StrideError(f"{where}: image does not decode ({type(err).__name__}: {err})") from None
    side = max(1, round(min(rgb.size) * crop_fraction))
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    square = rgb.crop((left, top, left + side, top + side)).resize((size_px, size_px), Image.Resampling.BILINEAR)
    return np.asarray(square).transpose(2, 0, 1).copy()


def identity_split(count: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Identity indices per split from a seeded permutation; at least 2 identities for val and for test."""
    order = np.random.default_rng(seed).permutation(count)
    test = max(2, round(count * test_fraction))
    val = max(2, round(count * val_fraction))
    if test + val >= count:
        raise StrideError(f"{count} identities cannot give {val} to validation, {test} to test and leave some to "
                          "train on; add identities or lower --val-fraction/--test-fraction")
    return {"train": np.sort(order[test + val:]), "val": np.sort(order[test:test + val]), "test": np.sort(order[:test])}


def prepare_identity_folders(source: str | Path, out_dir: str | Path, *, size_px: int = FACE_SIZE_PX,
                             val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                             pairs_per_fold: int = PAIRS_PER_FOLD, encoding: str = "png",
                             samples_per_shard: int = 5000, overwrite: bool = False) -> Manifest:
    root = Path(source)
    if not root.is_dir():
        raise StrideError(f"--source {root}: not a folder (expected one sub-folder of images per identity)")
    files = {folder.name: sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
             for folder in sorted(root.iterdir()) if folder.is_dir() and not folder.name.startswith(".")}
    identities = [name for name, images in files.items() if images]
    if len(identities) < 6:
        raise StrideError(f"--source {root}: {len(identities)} sub-folders hold .jpg/.png images; an embedding "
                          "dataset needs identities to train on and at least 2 each to validate and test on")
    chosen = identity_split(len(identities), val_fraction, test_fraction, seed)
    members = {split: [(int(i), path) for i in ids for path in files[identities[i]]] for split, ids in chosen.items()}
    labels = {split: np.asarray([label for label, _ in listed], dtype=np.int64) for split, listed in members.items()}
    pairs, origin = drawn_pairs(labels, pairs_per_fold=pairs_per_fold, seed=seed)

    def images():
        for split, listed in members.items():
            for _, path in listed:
                yield split, load_face(path.read_bytes(), str(path), size_px)

    return write_embedding_dataset(
        out_dir, dataset=root.name, identities=identities, labels=labels, pairs=pairs,
        pair_origin=origin,
        images=images(), source={"kind": "identity-folders", "path": str(root.absolute())},
        parameters={"size_px": size_px, "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed,
                    "pairs_per_fold": pairs_per_fold, "encoding": encoding, "samples_per_shard": samples_per_shard},
        encoding=encoding, samples_per_shard=samples_per_shard, overwrite=overwrite)
