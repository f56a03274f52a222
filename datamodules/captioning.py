"""Lightning datamodule for image captioning over shards from `prepare_coco_captions` or `prepare_shapes_captions`.

A batch, once on the device, is `(images, tokens, lengths, references)`:
images float32 N x 3 x S x S in [0, 1]; tokens int64 N x T, one caption's word ids then EOS (0),
padded with -100; lengths int64 N (words + 1); references, every raw caption of each image.
Training takes one caption per image (or `captions_per_image` distinct ones, the image repeated for each),
drawn from (seed, epoch, image id), so an epoch sees each image once with different captions each time;
evaluation always takes the first.

Loader workers resize each image to S x S (images vary in size, so this is what lets them
stack); crop and flip run batched on the device. Flipping swaps "left" and "right" in the
token targets (not in the references), and is off by default: other words can depend on
the side too, and shapes-captions describes positions.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stride.datamodules.sharded import ShardedDataModule
from stride.datamodules.vocabulary import Vocabulary
from stride.errors import StrideError
from stride.names import plain_name

PAD = -100  # the loss's ignore_index
CROP_SIDE = (0.8, 1.0)  # random_crop: a square of this fraction of the side, resized back to S x S
MIRRORED_WORDS = (("left", "right"),)
MAX_VOCABULARY_BYTES = 64 << 20  # a 100,000-word vocabulary is about 2 MiB


def resized_rgb(image_chw: np.ndarray, side: int) -> np.ndarray:
    """A decoded C x H x W image (RGB or grayscale) as uint8 3 x side x side."""
    pixels = image_chw[0] if image_chw.shape[0] == 1 else image_chw.transpose(1, 2, 0)
    resized = Image.fromarray(pixels).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(resized).transpose(2, 0, 1)


class CaptionBatcher:
    """Decoded (image, record) samples -> a CPU batch; a module-level class so that loader workers can pickle it.

    The batch is (images uint8 N x 3 x S x S, captions int64 N x C x T: every caption of each image
    as ids + EOS, padded with -100, caption lengths, image ids, references); the caption to train
    on is chosen on the device side, where the epoch is known.
    """

    def __init__(self, vocabulary: Vocabulary, image_size: int, max_words: int):
        self.vocabulary, self.image_size, self.max_words = vocabulary, image_size, max_words

    def __call__(self, samples: list[tuple[np.ndarray, dict[str, Any]]]) -> tuple[Any, ...]:
        images = np.stack([resized_rgb(image, self.image_size) for image, _ in samples])
        encoded = [[self.vocabulary.encode(caption)[:self.max_words] + [Vocabulary.eos_id]
                    for caption in record["captions"]] for _, record in samples]
        lengths = [[len(ids) for ids in captions] for captions in encoded]
        captions = torch.full((len(samples), max(map(len, encoded)), max(map(max, lengths))), PAD, dtype=torch.int64)
        for row, image_captions in enumerate(encoded):
            for column, ids in enumerate(image_captions):
                captions[row, column, :len(ids)] = torch.tensor(ids)
        return (torch.from_numpy(images), captions, lengths, [int(record["image_id"]) for _, record in samples],
                [list(record["captions"]) for _, record in samples])


def random_square_crop(images: torch.Tensor, side_range: tuple[float, float] = CROP_SIDE) -> torch.Tensor:
    """Each image's own random square (a fraction of the side in `side_range`) resized back to the full size."""
    batch = images.shape[0]
    scale = torch.empty(batch, device=images.device).uniform_(*side_range)
    shift = (torch.rand(batch, 2, device=images.device) * 2 - 1) * (1 - scale)[:, None]  # stays inside the image
    theta = torch.zeros(batch, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def caption_choice(seed: int, epoch: int, image_ids: list[int], counts: list[int], per_image: int = 1) -> list[int]:
    """Which captions each image trains on this epoch (`per_image` of them in a row per image, distinct while it
    has enough): the same on every rank, run and loader worker count."""
    chosen = []
    for image_id, count in zip(image_ids, counts):
        draw = random.Random(f"{seed}-{epoch}-{image_id}")
        if per_image == 1:
            chosen.append(draw.randrange(count))
        elif count >= per_image:
            chosen.extend(draw.sample(range(count), per_image))
        else:  # every caption once, the rest drawn again
            chosen.extend(draw.sample(range(count), count) + [draw.randrange(count) for _ in range(per_image - count)])
    return chosen


class CaptioningData(ShardedDataModule):
    task = "captioning"
    fields = ("jpg", "json")
    cacheable = False  # images of every size, several captions each: always streamed

    def __init__(self, path: str | Path, *, image_size: int = 224, horizontal_flip: bool = False,
                 random_crop: bool = False, max_words: int = 50, captions_per_image: int = 1, **kwargs: Any):
        super().__init__(path, **kwargs)
        if image_size < 8 or max_words < 1 or captions_per_image < 1:
            raise StrideError(f"captioning needs data.image_size >= 8, max_words >= 1 and captions_per_image >= 1, "
                              f"got {image_size}, {max_words}, {captions_per_image}")
        self.image_size, self.horizontal_flip, self.random_crop = image_size, horizontal_flip, random_crop
        self.max_words, self.captions_per_image = max_words, captions_per_image
        self._vocabulary = self._load_vocabulary()
        self.collate = CaptionBatcher(self._vocabulary, image_size, max_words)
        self._mirrored = [(self._vocabulary.id(a), self._vocabulary.id(b)) for a, b in MIRRORED_WORDS
                          if a in self._vocabulary and b in self._vocabulary]

    def _load_vocabulary(self) -> Vocabulary:
        recorded = self.manifest.parameters.get("vocabulary")
        where = self.root.member("manifest.json")
        if not isinstance(recorded, dict) or not isinstance(recorded.get("file"), str) \
                or not isinstance(recorded.get("sha256"), str):
            raise StrideError(f"{where}: parameters.vocabulary must name the vocabulary file and its sha256 "
                              "(prepare the dataset again)")
        name = plain_name(recorded["file"], f"{where}: parameters.vocabulary.file")
        return Vocabulary.from_bytes(self.root.read_bytes(name, MAX_VOCABULARY_BYTES), self.root.member(name),
                                     expected_sha256=recorded["sha256"])

    @property
    def vocabulary(self) -> Vocabulary:
        return self._vocabulary

    @property
    def num_classes(self) -> int:
        return len(self._vocabulary)

    @property
    def class_names(self) -> list[str]:
        return list(self._vocabulary.words)

    @property
    def constant_caption(self) -> str | None:
        """The dataset's constant-caption baseline (the most frequent training caption), if recorded."""
        caption = self.manifest.parameters.get("constant_caption")
        return caption if isinstance(caption, str) and caption else None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, captions, caption_lengths, image_ids, references = batch
        images = images.float().div_(255)
        trainer = getattr(self, "trainer", None)
        training = trainer is not None and trainer.training
        per_image = self.captions_per_image if training else 1  # evaluation: each image once, its first caption
        if training:
            assert trainer is not None  # training implies a trainer
            chosen = caption_choice(self.seed, trainer.current_epoch, image_ids, [len(c) for c in caption_lengths],
                                    per_image)
            if per_image > 1:  # each image once per caption it trains on
                images = images.repeat_interleave(per_image, dim=0)
                caption_lengths = [c for c in caption_lengths for _ in range(per_image)]
                references = [r for r in references for _ in range(per_image)]
        else:
            chosen = [0] * len(image_ids)
        lengths = [lengths[index] for lengths, index in zip(caption_lengths, chosen)]
        rows = torch.arange(len(chosen), device=captions.device) // per_image
        tokens = captions[rows, torch.tensor(chosen, device=captions.device), :max(lengths)]
        if training:
            if self.random_crop:
                images = random_square_crop(images)
            if self.horizontal_flip:
                images, tokens = self.flip(images, tokens)
        return images, tokens, torch.tensor(lengths, dtype=torch.int64, device=captions.device), references

    def flip(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mirror half the images at random, swapping "left" and "right" in their captions."""
        flipped = torch.rand(images.shape[0], device=images.device) < 0.5
        mirrored = tokens.clone()
        for left, right in self._mirrored:
            mirrored[tokens == left], mirrored[tokens == right] = right, left
        return (torch.where(flipped[:, None, None, None], images.flip(-1), images),
                torch.where(flipped[:, None], mirrored, tokens))
