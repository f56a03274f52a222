"""Metric learning over any backbone (docs/embedding.md): the embedding network, its three losses with their
mining inside the batch, and the module that trains and verifies it.

- Triplet loss (Schroff et al. 2015, FaceNet, eq. 2): max(0, |f(a) - f(p)|^2 - |f(a) - f(n)|^2 + alpha) on
  squared distances between unit-length embeddings, over triplets mined in the batch: batch-hard (each
  anchor's farthest positive and closest negative; Hermans et al. 2017) or semi-hard (every anchor-positive
  pair with the closest negative farther than the positive, FaceNet sec. 3.2, eq. 4).
- Contrastive loss (Hadsell et al. 2006, eq. 4): D^2 / 2 for pairs of one identity, max(0, m - D)^2 / 2 for
  pairs of two, over every pair in the batch.
- A verification head (Taigman et al. 2014, DeepFace, sec. 4.2; the research notes, section C): a logistic
  unit on |f(x1) - f(x2)| trained with cross-entropy on every pair in the batch.

Pairs and triplets come from P identities x K images per batch (stride.datamodules.embedding). The pair
loss terms are the mean over pairs of one identity plus the mean over pairs of two, halved: a P x K batch
holds about K times more of the second kind, and this keeps both heard (stride's choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stride.config.schema import OptimConfig, ScheduleConfig
from stride.errors import StrideError
from stride.lightning_modules.base import StrideModule
from stride.metrics.verification import VerificationReport, verification_report

LossName = Literal["triplet", "contrastive", "verification_head"]
Mining = Literal["batch_hard", "semi_hard"]
TRIPLET_MARGIN = 0.2  # alpha of the research notes (section C), FaceNet's value
CONTRASTIVE_MARGIN = 1.0  # m: half the diameter of the unit sphere the embeddings lie on (stride's choice)


class EmbeddingNetwork(nn.Module):
    """backbone -> linear projection -> unit length: FaceNet's embedding lies on the unit hypersphere (sec. 3),
    so distances lie in [0, 2] and a margin means the same whatever the backbone's scale."""

    def __init__(self, backbone: nn.Module, features: int, embedding_dim: int):
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Linear(features, embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.projection(self.backbone(x)), dim=1)


# -- mining -------------------------------------------------------------------------------------------------
def squared_distances(embeddings: Tensor) -> Tensor:
    """All pairwise squared Euclidean distances of the rows, N x N."""
    norms = embeddings.pow(2).sum(1)
    return (norms[:, None] + norms[None, :] - 2 * embeddings @ embeddings.T).clamp_min(0)


def _masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    same = labels[:, None] == labels[None, :]
    positives = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return positives, ~same


def batch_hard_triplets(distances: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(anchors, positives, negatives): for every sample with a positive and a negative in the batch, its
    farthest positive and its closest negative."""
    positives, negatives = _masks(labels)
    anchors = torch.nonzero(positives.any(1) & negatives.any(1)).squeeze(1)
    hardest_positive = distances.masked_fill(~positives, -torch.inf).argmax(1)
    hardest_negative = distances.masked_fill(~negatives, torch.inf).argmin(1)
    return anchors, hardest_positive[anchors], hardest_negative[anchors]


def semi_hard_triplets(distances: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(anchors, positives, negatives): every anchor-positive pair with its semi-hard negative, the closest
    negative farther from the anchor than the positive (FaceNet eq. 4); where there is none, the farthest
    negative (as TensorFlow Addons' triplet_semihard_loss does)."""
    positives, negatives = _masks(labels)
    anchors, partners = torch.nonzero(positives, as_tuple=True)
    to_negatives = distances[anchors]
    candidates = negatives[anchors]
    beyond = candidates & (to_negatives > distances[anchors, partners][:, None])
    closest_beyond = to_negatives.masked_fill(~beyond, torch.inf).argmin(1)
    farthest = to_negatives.masked_fill(~candidates, -torch.inf).argmax(1)
    chosen = torch.where(beyond.any(1), closest_beyond, farthest)
    keep = candidates.any(1)
    return anchors[keep], partners[keep], chosen[keep]


MINERS = {"batch_hard": batch_hard_triplets, "semi_hard": semi_hard_triplets}


# -- losses -------------------------------------------------------------------------------------------------
def triplet_loss(embeddings: Tensor, labels: Tensor, margin: float = TRIPLET_MARGIN,
                 mining: Mining = "batch_hard") -> tuple[Tensor, Tensor]:
    """(mean loss over the mined triplets, share of them with a positive loss)."""
    distances = squared_distances(embeddings)
    anchors, positives, negatives = MINERS[mining](distances.detach(), labels)
    if len(anchors) == 0:  # no identity twice, or only one identity: nothing to learn from this batch
        zero = embeddings.sum() * 0
        return zero, zero.detach()
    losses = F.relu(distances[anchors, positives] - distances[anchors, negatives] + margin)
    return losses.mean(), (losses > 0).float().mean()


def _pair_mean(values: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
    """Half the mean over pairs of one identity plus half the mean over pairs of two (each pair once)."""
    upper = torch.ones_like(positives).triu(1)
    total = values.sum() * 0
    for mask in (positives & upper, negatives & upper):
        if mask.any():
            total = total + values[mask].mean() / 2
    return total


def contrastive_loss(embeddings: Tensor, labels: Tensor, margin: float = CONTRASTIVE_MARGIN) -> Tensor:
    """Hadsell et al. 2006, eq. 4, with D the Euclidean distance."""
    squared = squared_distances(embeddings)
    positives, negatives = _masks(labels)
    distance = squared.clamp_min(1e-12).sqrt()  # the sqrt's gradient is infinite at 0
    values = torch.where(positives, squared / 2, F.relu(margin - distance).pow(2) / 2)
    return _pair_mean(values, positives, negatives)


class VerificationHead(nn.Module):
    """p(same) = sigmoid(b - sum_k w_k |f1_k - f2_k|) with w = softplus(v) >= 0: the logistic unit on
    |f(x1) - f(x2)| of DeepFace (sec. 4.2). Its negative log-odds are a weighted L1 distance, so a model
    exported with it scales embeddings by w and is served by plain L1 distances."""

    def __init__(self, embedding_dim: int):
        super().__init__()
        self.raw_weights = nn.Parameter(torch.zeros(embedding_dim))
        self.bias = nn.Parameter(torch.zeros(()))

    @property
    def weights(self) -> Tensor:
        return F.softplus(self.raw_weights)

    def loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        scaled = embeddings * self.weights
        distances = (scaled[:, None, :] - scaled[None, :, :]).abs().sum(-1)
        positives, negatives = _masks(labels)
        values = F.binary_cross_entropy_with_logits(self.bias - distances, positives.float(), reduction="none")
        return _pair_mean(values, positives, negatives)


@dataclass(frozen=True)
class LossSettings:
    name: LossName = "triplet"
    margin: float | None = None  # None: TRIPLET_MARGIN or CONTRASTIVE_MARGIN
    mining: Mining = "batch_hard"


# -- the module -------------------------------------------------------------------------------------------------
class EmbeddingModule(StrideModule):
    """Trains an embedding network with one of the losses; on val and test embeds every sample and logs the
    verification numbers of the split's pairs (stride.metrics.verification). The threshold that classifies
    the validation pairs best is kept in the `threshold` buffer, so the checkpoint of the best epoch carries
    the threshold chosen with it, and the exported model serves it (stride.serving.embedding)."""

    threshold: Tensor  # a buffer

    def __init__(self, network: nn.Module, embedding_dim: int, loss: LossSettings, optim: OptimConfig,
                 schedule: ScheduleConfig, description: dict[str, Any] | None = None):
        super().__init__(network, optim, schedule, description)
        self.loss_settings = loss
        self.head = VerificationHead(embedding_dim) if loss.name == "verification_head" else None
        self.register_buffer("threshold", torch.tensor(float("nan")))
        self._collected: list[tuple[Tensor, Tensor, Tensor]] = []
        self.last_test_report: VerificationReport | None = None

    @property
    def distance_order(self) -> float:
        """The norm whose distances are thresholded: L1 under the verification head, else Euclidean."""
        return 1.0 if self.head is not None else 2.0

    def served(self, embeddings: Tensor) -> Tensor:
        """What the exported model returns for these embeddings (scaled by the head's weights, if any)."""
        return embeddings * self.head.weights if self.head is not None else embeddings

    def metric_loss(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor | None]:
        """(loss, share of active triplets or None)."""
        settings = self.loss_settings
        if settings.name == "triplet":
            return triplet_loss(embeddings, labels, TRIPLET_MARGIN if settings.margin is None else settings.margin,
                                settings.mining)
        if settings.name == "contrastive":
            margin = CONTRASTIVE_MARGIN if settings.margin is None else settings.margin
            return contrastive_loss(embeddings, labels, margin), None
        assert self.head is not None  # made for this loss
        return self.head.loss(embeddings, labels), None

    def _step(self, batch: tuple[Tensor, Tensor, Tensor], split: str) -> Tensor:
        images, labels, indices = batch
        embeddings = self(images)
        loss, active = self.metric_loss(embeddings, labels)
        self.log_mean(f"{split}_loss", loss, len(labels))
        if split == "train":
            if active is not None:
                self.log_mean("train_active_triplets", active, len(labels))
            self.log_step_loss(loss)
        else:
            self._collected.append((self.served(embeddings).detach().float(), labels, indices))
        return loss

    def _eval_epoch_start(self, split: str) -> None:
        self._collected = []

    def _gathered(self, tensor: Tensor) -> Tensor:
        """Every rank's rows of `tensor` (ranks hold different numbers of samples)."""
        if self.trainer.world_size == 1:
            return tensor
        counts = self.all_gather_tensor(torch.tensor(len(tensor), device=tensor.device)).reshape(-1)
        padded = tensor.new_zeros((int(counts.max()), *tensor.shape[1:]))
        padded[:len(tensor)] = tensor
        gathered = self.all_gather_tensor(padded)
        return torch.cat([rows[:count] for rows, count in zip(gathered, counts.tolist())])

    def _log_epoch(self, split: str) -> None:
        if split == "train":
            return
        collected, self._collected = self._collected, []
        if self.trainer.sanity_checking or not collected:
            return
        embeddings, labels, indices = (self._gathered(torch.cat(parts)).cpu().numpy() for parts in zip(*collected))
        pairs_of = getattr(getattr(self.trainer, "datamodule", None), "verification_pairs", None)
        if pairs_of is None:
            raise StrideError("the embedding module verifies the pairs its datamodule names; use "
                              "stride.datamodules.embedding.EmbeddingData")
        given = float(self.threshold) if split == "test" and torch.isfinite(self.threshold) else None
        report = verification_report(embeddings.astype(np.float64), labels, indices, pairs_of(split),
                                     order=self.distance_order, given_threshold=given)
        for name, value in report.metrics(split).items():  # the same on every rank: no sync
            self.log(name, value, on_step=False, on_epoch=True, batch_size=1,
                     prog_bar=name == f"{split}_verification_acc")
        if split == "val":
            self.threshold.fill_(report.threshold)
        else:
            self.last_test_report = report
            self.log("test_samples", float(len(labels)))
