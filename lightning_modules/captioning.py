"""One LightningModule for image captioning (docs/models.md, A4) with either decoder from the registry.

Batches are `(images, tokens, lengths, references)`: N x 3 x S x S images in [0, 1], int64
N x T word ids (a caption, EOS, then -100 padding), int64 N lengths (words + 1) and every
raw reference caption of each image. Training is teacher forcing with the study's loss
(eq. 63): cross-entropy averaged over all words of the batch, EOS included. After each
validation and test epoch the split's images are decoded greedily and scored by BLEU,
ROUGE-L and CIDEr-D (no Java, so the same on every machine; METEOR is left to the task,
from `last_test_captions`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stride.architectures.captioning import CaptionNetwork
from stride.config.schema import OptimConfig, ScheduleConfig
from stride.datamodules.vocabulary import Vocabulary
from stride.lightning_modules.base import StrideModule
from stride.metrics.caption_scores import caption_scores

PAD = -100  # the datamodule's padding: ignored by the loss
EPOCH_METRICS = ("BLEU", "ROUGE_L", "CIDEr")
LOGGED = {"BLEU-4": "bleu4", "ROUGE-L": "rouge_l", "CIDEr-D": "cider"}
TEST_LOGGED = {**LOGGED, "BLEU-1": "bleu1", "BLEU-2": "bleu2", "BLEU-3": "bleu3"}

CaptionPair = tuple[list[str], str]  # (references, generated caption)


def caption_loss(logits: Tensor, tokens: Tensor) -> Tensor:
    """Eq. 63: mean cross-entropy over every word (EOS included) of the batch; padding ignored."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens.reshape(-1), ignore_index=PAD)


def pack_pairs(pairs: list[CaptionPair]) -> np.ndarray:
    """(references, caption) pairs as UTF-8 JSON bytes, so ranks all-gather them as tensors (no pickling)."""
    return np.frombuffer(json.dumps(pairs).encode(), dtype=np.uint8)


def unpack_pairs(packed: np.ndarray) -> list[CaptionPair]:
    return [(list(references), caption) for references, caption in json.loads(packed.tobytes().decode())]


class CaptioningModule(StrideModule):
    """Teacher-forced cross-entropy; per epoch the loss, and on val/test greedy captions scored
    (`val_bleu4`, `val_rouge_l`, `val_cider`; `test_bleu1`..`test_bleu4`, `test_rouge_l`, `test_cider`).

    `train_loss` weighs each batch by its images (no device sync per step); `val_loss` and
    `test_loss` by their words, so they are the mean over all words of the split. Under DDP each
    rank's captions are all-gathered before scoring (CIDEr-D's idf is over the whole split).
    """

    network: CaptionNetwork

    def __init__(self, network: CaptionNetwork, optim: OptimConfig, schedule: ScheduleConfig,
                 description: dict[str, Any] | None, vocabulary_words: list[str], *,
                 max_words: int = 50, kept_samples: int = 8):
        super().__init__(network, optim, schedule, description)
        self.vocabulary = Vocabulary(vocabulary_words)
        self.max_words = max_words
        self.kept_samples = kept_samples
        self._pairs: list[CaptionPair] = []  # this epoch's val or test images, this rank's
        self.last_samples: list[CaptionPair] = []  # the first few of the latest val/test epoch, for figures
        self.last_sample_images: list[np.ndarray] = []  # their images, uint8 H x W x 3
        self.last_test_captions: list[CaptionPair] = []  # every test image of every rank, after testing
        self.val_samples: tuple[list[CaptionPair], list[np.ndarray]] = ([], [])  # the latest validation's few

    def _step(self, batch: tuple[Tensor, Tensor, Tensor, list[list[str]]], split: str) -> Tensor:
        images, tokens, lengths, references = batch
        loss = caption_loss(self(images, tokens), tokens)
        if split == "train":
            self.log_mean("train_loss", loss, len(images))
            self.log_step_loss(loss)
            return loss
        self.log_mean(f"{split}_loss", loss, torch.as_tensor(lengths).sum())
        self._collect(images, references)
        return loss

    def _collect(self, images: Tensor, references: list[list[str]]) -> None:
        ids = self.network.generate(images, max_words=self.max_words, eos_id=Vocabulary.eos_id,
                                    unknown_id=Vocabulary.unknown_id).cpu().tolist()  # one transfer per batch
        wanted = self.kept_samples - len(self.last_sample_images)
        if wanted > 0:
            pixels = (images[:wanted].float().clamp(0, 1) * 255).round().to(torch.uint8)
            self.last_sample_images += list(pixels.permute(0, 2, 3, 1).cpu().numpy())
        self._pairs += [(list(refs), self.vocabulary.decode(row)) for refs, row in zip(references, ids)]

    def _split_pairs(self) -> list[CaptionPair]:
        """Every rank's pairs of this epoch (all-gathered as padded byte tensors under DDP)."""
        if self.trainer.world_size == 1:
            return self._pairs
        packed = torch.from_numpy(pack_pairs(self._pairs).copy()).to(self.device)
        sizes = self.all_gather_tensor(torch.tensor(packed.numel(), device=self.device)).reshape(-1)
        padded = packed.new_zeros(int(sizes.max()))
        padded[:packed.numel()] = packed
        gathered = self.all_gather_tensor(padded).reshape(len(sizes), -1).cpu().numpy()
        return [pair for rank, size in enumerate(sizes.tolist()) for pair in unpack_pairs(gathered[rank, :size])]

    def _log_scores(self, split: str) -> None:
        pairs = self._split_pairs()
        self.last_samples = pairs[:self.kept_samples]
        if split == "val":
            self.val_samples = (self.last_samples, list(self.last_sample_images))
        if split == "test":
            self.last_test_captions = pairs
            self.log("test_samples", float(len(pairs)))
        if pairs:
            scores = caption_scores({i: caption for i, (_, caption) in enumerate(pairs)},
                                    {i: refs for i, (refs, _) in enumerate(pairs)},
                                    metrics=EPOCH_METRICS, tokenizer="python")
            for key, name in (TEST_LOGGED if split == "test" else LOGGED).items():
                # the same on every rank: no sync
                self.log(f"{split}_{name}", scores.values[key], prog_bar=split == "val" and name == "cider")
        self._pairs = []

    def _eval_epoch_start(self, split: str) -> None:
        self._pairs, self.last_sample_images = [], []
        if split == "test":
            self.last_test_captions = []

    def _log_epoch(self, split: str) -> None:
        if split != "train":
            self._log_scores(split)
