"""Datasets of the embedding task (docs/embedding.md): images of identities, and the pairs a split is verified on.

A sample is an image, its identity (`cls`) and its key, the sample's index in its split written as digits;
the manifest's `annotations.verification_pairs` holds, per evaluated split, pairs of those indices in folds
(official `pairs.txt` pairs, or pairs drawn in the same 10-fold structure), so the pairs are covered by the
manifest's sha256 like everything else the dataset holds.

Training batches are P identities x K images (`images_per_identity`), what triplet mining needs
(FaceNet, Schroff et al. 2015, sec. 3.2). They are grouped inside each loader slot's own shuffled stream
(stride.datamodules.streaming): a slot keeps drawing its samples into a bounded pool and emits a batch
once P identities have K waiting images each. Slots never share samples, so DDP ranks and loader workers
still train on disjoint samples; an identity may be split over slots, which only means a batch pairs
images of one slot.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stride.datamodules.image_classification import ImageClassificationData
from stride.datamodules.image_shards import encode_image
from stride.datamodules.manifest import Manifest
from stride.datamodules.pixel_stats import PixelSums
from stride.datamodules.streaming import KEY_FIELD, ShardStream, stack_batch
from stride.datamodules.writer import ShardWriter
from stride.errors import StrideError
from stride.metrics.verification import VerificationPairs

TASK = "embedding"
PAIRS_ANNOTATION = "verification_pairs"
FOLDS = 10  # the LFW protocol's


def sample_key(index: int) -> str:
    return f"{index:08d}"


def images_labels_indices(samples: list[tuple[Any, ...]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uint8 images N x C x H x W, identities, sample indices) from (image, identity, key) samples."""
    images, labels = stack_batch([sample[:2] for sample in samples])
    try:
        indices = torch.tensor([int(sample[2]) for sample in samples], dtype=torch.int64)
    except ValueError:
        raise StrideError(f"sample keys {[s[2] for s in samples[:3]]} are not sample indices; embedding datasets "
                          "are written by `stride data prepare lfw | identity-folders | digits-heldout`") from None
    return images, labels.long(), indices


class IdentityBatchStream(ShardStream):
    """A training stream whose batches hold P identities x K images, grouped within this slot's samples."""

    def __init__(self, *args: Any, images_per_identity: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if images_per_identity < 2 or self.batch_size % images_per_identity:
            raise StrideError(f"data.batch_size {self.batch_size} must be a multiple of data.images_per_identity "
                              f"{images_per_identity} (at least 2): a batch is P identities x K images")
        self.images_per_identity = images_per_identity
        self.split_samples = sum(shard.num_samples for shard in self.shards)

    def _batches(self, samples: Iterator[tuple[Any, ...]], limit: int | None) -> Iterator[Any]:
        if limit is None:  # evaluation: every sample once, as stored
            yield from super()._batches(samples, limit)
            return
        if limit == 0:
            return
        per_identity = self.images_per_identity
        identities = self.batch_size // per_identity
        capacity = max(self.shuffle_buffer, 2 * self.batch_size)
        pool: dict[int, deque[tuple[Any, ...]]] = defaultdict(deque)
        ready: dict[int, None] = {}  # identities with K waiting images, in the order they got them
        waiting: set[str] = set()  # keys in the pool: a sample cycled back before it was used waits once
        arrival: deque[tuple[int, str]] = deque()
        produced = since_last = 0
        for sample in samples:
            since_last += 1
            if since_last > 2 * self.split_samples + capacity:
                raise StrideError(f"{self.root}: loader slot of rank {self.rank} saw every sample twice without "
                                  f"{identities} identities of {per_identity} images each; lower "
                                  "data.images_per_identity or data.batch_size, or use fewer data.num_workers")
            label, key = int(sample[1]), sample[2]
            if key in waiting:
                continue
            pool[label].append(sample)
            waiting.add(key)
            arrival.append((label, key))
            if len(pool[label]) == per_identity:
                ready[label] = None
            if len(ready) >= identities:
                batch = []
                for identity in list(ready)[:identities]:
                    del ready[identity]
                    for _ in range(per_identity):
                        taken = pool[identity].popleft()
                        waiting.discard(taken[2])
                        batch.append(taken)
                    if len(pool[identity]) >= per_identity:
                        ready[identity] = None
                    elif not pool[identity]:
                        del pool[identity]
                yield self.to_batch(batch)
                produced, since_last = produced + 1, 0
                if produced >= limit:
                    return
            while len(waiting) > capacity:  # the oldest waiting sample makes room
                label, key = arrival.popleft()
                if key in waiting:  # the identity's queue is in arrival order: its oldest goes
                    waiting.discard(pool[label].popleft()[2])
                    if len(pool[label]) < per_identity:
                        ready.pop(label, None)
                    if not pool[label]:
                        del pool[label]


class EmbeddingData(ImageClassificationData):
    """Batches of (images float32 in [0, 1], identities, sample indices); training batches P x K."""

    task = TASK
    # the classification batch plus the sample indices (mypy reads the base's collate as returning two tensors)
    collate = staticmethod(images_labels_indices)  # type: ignore[assignment]

    def __init__(self, path: str | Path, *, images_per_identity: int = 4, **kwargs: Any):
        super().__init__(path, **kwargs)
        self.fields = (self.image_ext, "cls", KEY_FIELD)
        self.images_per_identity = images_per_identity

    def new_stream(self, split: str) -> Any:
        if split != "train":
            return super().new_stream(split)
        rank, world = self._rank_and_world()
        return IdentityBatchStream(self.root, self.manifest.split(split).shards, self.fields, self.collate,
                                   batch_size=self.batch_size, training=True, rank=rank, world_size=world,
                                   num_workers=self.num_workers, seed=self.seed, shuffle_buffer=self.shuffle_buffer,
                                   images_per_identity=self.images_per_identity)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels, indices = batch
        images, labels = super().on_after_batch_transfer((images, labels), dataloader_idx)
        return images, labels, indices

    def verification_pairs(self, split: str) -> VerificationPairs:
        return read_pairs(self.manifest, split, self.root.member("manifest.json"))


# -- pairs ---------------------------------------------------------------------------------------------------
Pair = tuple[int, int, int, bool]  # (fold, first sample index, second sample index, same identity)


def read_pairs(manifest: Manifest, split: str, where: str) -> VerificationPairs:
    stored = manifest.annotations.get(PAIRS_ANNOTATION, {}).get(split)
    if not stored or not stored.get("pairs"):
        raise StrideError(f"{where}: no verification pairs for split {split!r} (annotations.{PAIRS_ANNOTATION}); "
                          "prepare the dataset with `stride data prepare lfw | identity-folders | digits-heldout`")
    table = np.asarray(stored["pairs"], dtype=np.int64).reshape(-1, 4)
    return VerificationPairs(first=table[:, 1], second=table[:, 2], same=table[:, 3].astype(bool), fold=table[:, 0])


def generate_pairs(labels: np.ndarray, *, pairs_per_fold: int, seed: int, folds: int = FOLDS) -> list[Pair]:
    """Pairs in LFW's structure: per fold `pairs_per_fold` pairs of one identity, then as many of two, drawn
    without repetition from a seeded generator. Fewer per fold when the split cannot make that many distinct
    pairs. Unlike LFW's, the folds are not identity-disjoint (a split may hold too few identities)."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == identity) for identity in np.unique(labels)]
    matched_possible = sum(len(m) * (len(m) - 1) // 2 for m in members)
    mismatched_possible = len(labels) * (len(labels) - 1) // 2 - matched_possible
    per_fold = min(pairs_per_fold, matched_possible // folds, mismatched_possible // folds)
    if per_fold < 1:
        raise StrideError(f"{len(labels)} samples of {len(members)} identities cannot make {folds} folds of pairs: "
                          f"each fold needs a pair of one identity and a pair of two")
    matched = _distinct_pairs(rng, per_fold * folds, matched_possible, labels, members, same=True)
    mismatched = _distinct_pairs(rng, per_fold * folds, mismatched_possible, labels, members, same=False)
    pairs: list[Pair] = []
    for fold in range(folds):
        chunk = slice(fold * per_fold, (fold + 1) * per_fold)
        pairs += [(fold, a, b, True) for a, b in matched[chunk]] + [(fold, a, b, False) for a, b in mismatched[chunk]]
    return pairs


def drawn_pairs(labels: dict[str, np.ndarray], *, pairs_per_fold: int,
                seed: int) -> tuple[dict[str, list[Pair]], dict[str, str]]:
    """Pairs of the val and test splits (seeds `seed` + 1 and + 2), and where they came from."""
    pairs, origin = {}, {}
    for offset, split in enumerate(("val", "test"), start=1):
        pairs[split] = generate_pairs(labels[split], pairs_per_fold=pairs_per_fold, seed=seed + offset)
        origin[split] = f"drawn from {split}'s identities, seed {seed + offset}"
    return pairs, origin


def _distinct_pairs(rng: np.random.Generator, count: int, possible: int, labels: np.ndarray,
                    members: list[np.ndarray], same: bool) -> list[tuple[int, int]]:
    if possible <= 4 * count:  # few candidates: list them all and choose among them
        everything = [(int(a), int(b)) for a in range(len(labels)) for b in range(a + 1, len(labels))
                      if (labels[a] == labels[b]) == same]
        return [everything[i] for i in rng.choice(len(everything), size=count, replace=False)]
    repeated = [m for m in members if len(m) > 1]
    chosen: dict[tuple[int, int], None] = {}  # insertion-ordered, so the draw is reproducible
    while len(chosen) < count:
        if same:
            group = repeated[rng.integers(len(repeated))]
            a, b = rng.choice(group, size=2, replace=False)
        else:
            first, second = rng.choice(len(members), size=2, replace=False)
            a = members[first][rng.integers(len(members[first]))]
            b = members[second][rng.integers(len(members[second]))]
        chosen[(int(min(a, b)), int(max(a, b)))] = None
    return list(chosen)


# -- writing -------------------------------------------------------------------------------------------------
def write_embedding_dataset(out_dir: str | Path, *, dataset: str, identities: list[str],
                            labels: dict[str, np.ndarray], pairs: dict[str, list[Pair]], pair_origin: dict[str, str],
                            images: Iterable[tuple[str, np.ndarray]], source: dict[str, Any],
                            parameters: dict[str, Any], encoding: str = "png", samples_per_shard: int = 5000,
                            overwrite: bool = False) -> Manifest:
    """Write the splits' images (uint8 C x H x W, split by split in index order, all of one shape) with their
    identities `labels[split]`, and the pairs of each evaluated split, as a stride dataset."""
    for split in ("train", "val", "test"):
        if len(labels.get(split, ())) == 0:
            raise StrideError(f"{dataset}: split {split!r} would be empty; every embedding dataset needs train, val "
                              "and test samples")
    counters = dict.fromkeys(labels, 0)
    shape: list[int] | None = None
    sums: PixelSums | None = None
    with ShardWriter(out_dir, samples_per_shard=samples_per_shard, overwrite=overwrite) as writer:
        for split, image in images:
            if shape is None:
                shape, sums = list(image.shape), PixelSums.empty(image.shape[0])
            if list(image.shape) != shape:
                raise StrideError(f"{dataset}: image {counters[split]} of {split} has shape {list(image.shape)}, the "
                                  f"others {shape}")
            index = counters[split]
            if split == "train":
                assert sums is not None  # made with the first image
                sums.add(image, channel_axis=0)
            writer.add(split, sample_key(index), {encoding: encode_image(image, encoding),
                                                  "cls": str(int(labels[split][index])).encode()})
            counters[split] += 1
        missing = {split: (counters[split], len(labels[split])) for split in labels
                   if counters[split] != len(labels[split])}
        if missing or sums is None:
            raise StrideError(f"{dataset}: images written per split differ from the identities given: {missing}")
        annotations = {PAIRS_ANNOTATION: {
            split: {"folds": len({p[0] for p in listed}), "origin": pair_origin.get(split, ""),
                    "pairs": [[fold, a, b, int(same)] for fold, a, b, same in listed]}
            for split, listed in pairs.items()}}
        return writer.commit(
            dataset=dataset, task=TASK, source=source, parameters=parameters, class_names=identities,
            sample_schema={encoding: {"role": "image", "shape": shape, "dtype": "uint8",
                                      "layout": "CHW" if encoding == "npy" else "HW(C) image"},
                           "cls": {"role": "label", "meaning": "identity", "dtype": "int",
                                   "num_classes": len(identities)}},
            stats=sums.stats(), annotations=annotations)
