"""The built-in offline embedding dataset: scikit-learn's digits with the classes held out (docs/embedding.md).

Digits 0-6 are the training identities; 7, 8 and 9 are never trained on and make validation and test
(their images split in half, seeded), so verification and identification are one-shot on unseen
identities. Pairs follow LFW's structure, 10 folds of matched then mismatched pairs, drawn with a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stride.datamodules.embedding import drawn_pairs, write_embedding_dataset
from stride.datamodules.manifest import Manifest
from stride.datamodules.sources.digits import SIZE_PX, load_digits_px
from stride.errors import StrideError

SEEN_DIGITS = 7  # 0..6 train; 7..9 are the unseen identities
PAIRS_PER_FOLD = 50  # 1,000 pairs per split: 500 impostor pairs resolve a FAR of 1e-2


def prepare_held_out_digits(out_dir: str | Path, *, size_px: int = SIZE_PX, seed: int = 0,
                            pairs_per_fold: int = PAIRS_PER_FOLD, encoding: str = "png",
                            samples_per_shard: int = 5000, overwrite: bool = False) -> Manifest:
    if size_px < 8:
        raise StrideError(f"--image-size {size_px}: the digits are 8x8 pixels; give 8 (native) or more")
    images, labels = load_digits_px(size_px)
    train = np.flatnonzero(labels < SEEN_DIGITS)
    unseen = np.random.default_rng(seed).permutation(np.flatnonzero(labels >= SEEN_DIGITS))
    half = len(unseen) // 2
    indices = {"train": train, "val": np.sort(unseen[:half]), "test": np.sort(unseen[half:])}
    split_labels = {split: labels[chosen] for split, chosen in indices.items()}
    pairs, origin = drawn_pairs(split_labels, pairs_per_fold=pairs_per_fold, seed=seed)
    return write_embedding_dataset(
        out_dir, dataset="digits-heldout", identities=[str(d) for d in range(10)], labels=split_labels, pairs=pairs,
        pair_origin=origin,
        images=((split, images[i]) for split, chosen in indices.items() for i in chosen),
        source={"kind": "builtin", "package": "scikit-learn", "loader": "sklearn.datasets.load_digits",
                "original_size_px": 8, "resized_to_px": size_px, "train_digits": list(range(SEEN_DIGITS)),
                "held_out_digits": list(range(SEEN_DIGITS, 10))},
        parameters={"size_px": size_px, "seed": seed, "pairs_per_fold": pairs_per_fold, "encoding": encoding,
                    "samples_per_shard": samples_per_shard},
        encoding=encoding, samples_per_shard=samples_per_shard, overwrite=overwrite)
