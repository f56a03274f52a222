"""Face verification and identification numbers as the field reports them (docs/embedding.md).

- Verification accuracy by the LFW protocol (Huang et al. 2007, LFW technical report 07-49, "View 2"):
  pairs in 10 folds; for each fold the distance threshold that maximises accuracy on the other nine is
  applied to it; the mean of the ten accuracies is reported with their standard deviation (LFW's
  sigma-hat, ddof=1; its standard error is that over sqrt(10)).
- TAR at a fixed FAR: the share of genuine pairs accepted at the largest threshold that accepts at most
  that share of impostor pairs; only where there are at least 1/FAR impostor pairs to resolve it.
- The ROC curve (TAR against FAR over every threshold) and its area.
- Identification top-1: each identity's first sample is the gallery, every other sample a probe matched to
  its nearest gallery sample (one-shot: one enrolled image per identity).

A pair is accepted ("same") when its distance is at most the threshold. Plain numpy, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from stride.errors import StrideError


@dataclass(frozen=True)
class VerificationPairs:
    """Pairs of samples by index (a sample's key in its split), whether they show the same identity, and the
    fold each belongs to."""

    first: np.ndarray
    second: np.ndarray
    same: np.ndarray  # bool
    fold: np.ndarray

    def __len__(self) -> int:
        return len(self.same)

    def subset(self, keep: np.ndarray) -> VerificationPairs:
        return VerificationPairs(self.first[keep], self.second[keep], self.same[keep], self.fold[keep])


@dataclass(frozen=True)
class FoldAccuracy:
    mean: float
    std: float  # over the folds, ddof=1 (LFW's sigma-hat)
    accuracies: tuple[float, ...]
    thresholds: tuple[float, ...]  # each chosen on the other folds

    @property
    def standard_error(self) -> float:
        return self.std / np.sqrt(len(self.accuracies))


def pair_distances(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray, order: float = 2.0) -> np.ndarray:
    """The Minkowski distance of order `order` (2: Euclidean, 1: L1) between the rows of each pair."""
    return np.linalg.norm(embeddings[first] - embeddings[second], ord=order, axis=1)


def accuracy_at(distances: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((distances <= threshold) == same)) if len(same) else 0.0


def best_threshold(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy): the threshold that classifies the pairs best; ties go to the smallest.

    Every cut between two distinct sorted distances is a candidate (its midpoint), and so are accepting
    none and accepting all: O(n log n) by cumulative counts."""
    if len(same) == 0:
        raise StrideError("no pairs to choose a verification threshold on")
    order = np.argsort(distances, kind="stable")
    ranked, genuine = distances[order], same[order].astype(np.int64)
    accepted_genuine = np.concatenate([[0], np.cumsum(genuine)])  # after accepting the k closest
    accepted = np.arange(len(ranked) + 1)
    rejected_impostors = (len(genuine) - genuine.sum()) - (accepted - accepted_genuine)
    correct = accepted_genuine + rejected_impostors
    cuts = np.concatenate([[True], ranked[1:] > ranked[:-1], [True]])  # k where the k-th and k+1-th differ
    k = int(np.flatnonzero(cuts)[np.argmax(correct[cuts])])
    if k == 0:
        threshold = float(np.nextafter(ranked[0], -np.inf))
    elif k == len(ranked):
        threshold = float(ranked[-1])
    else:
        threshold = float((ranked[k - 1] + ranked[k]) / 2)
    return threshold, float(correct[k] / len(ranked))


def fold_accuracy(distances: np.ndarray, same: np.ndarray, folds: np.ndarray) -> FoldAccuracy:
    """The LFW protocol: per fold, the threshold chosen on every other fold applied to this one."""
    names = np.unique(folds)
    if len(names) < 2:
        raise StrideError(f"the fold protocol needs pairs in at least 2 folds, these are in {len(names)}")
    accuracies, thresholds = [], []
    for fold in names:
        held = folds == fold
        threshold, _ = best_threshold(distances[~held], same[~held])
        thresholds.append(threshold)
        accuracies.append(accuracy_at(distances[held], same[held], threshold))
    values = np.asarray(accuracies)
    return FoldAccuracy(float(values.mean()), float(values.std(ddof=1)), tuple(accuracies), tuple(thresholds))


def roc_curve(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FAR, TAR, thresholds) with thresholds ascending over every distinct distance, from (0, 0) on."""
    thresholds = np.unique(distances)
    genuine, impostor = np.sort(distances[same]), np.sort(distances[~same])
    tar = np.searchsorted(genuine, thresholds, side="right") / max(1, len(genuine))
    far = np.searchsorted(impostor, thresholds, side="right") / max(1, len(impostor))
    below = np.nextafter(thresholds[0], -np.inf) if len(thresholds) else 0.0
    return np.concatenate([[0.0], far]), np.concatenate([[0.0], tar]), np.concatenate([[below], thresholds])


def roc_auc(far: np.ndarray, tar: np.ndarray) -> float:
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def tar_at_far(distances: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float] | None:
    """(TAR, threshold) at the largest threshold whose FAR is at most `far`; None with fewer than 1/far impostor
    pairs, where a FAR that small cannot be told from zero."""
    impostors = int((~same).sum())
    if impostors == 0 or impostors * far < 1 - 1e-9:
        return None
    rates, accepted, thresholds = roc_curve(distances, same)
    k = int(np.flatnonzero(rates <= far + 1e-12)[-1])
    return float(accepted[k]), float(thresholds[k])


def identification_top1(embeddings: np.ndarray, labels: np.ndarray, order: float = 2.0) -> float | None:
    """One-shot identification: the first sample of each identity (in the given order) is its gallery entry;
    every later sample is a probe, right when its nearest gallery entry has its identity. None without probes."""
    _, first = np.unique(labels, return_index=True)
    gallery = np.sort(first)
    probes = np.setdiff1d(np.arange(len(labels)), gallery)
    if len(probes) == 0:
        return None
    distances = np.linalg.norm(embeddings[probes, None, :] - embeddings[None, gallery, :], ord=order, axis=2)
    nearest = gallery[np.argmin(distances, axis=1)]
    return float(np.mean(labels[nearest] == labels[probes]))


@dataclass
class VerificationReport:
    """Every number of one split; `threshold` is the one that classifies all its pairs best."""

    pairs: int
    accuracy: FoldAccuracy
    threshold: float
    tar_at_far: dict[float, float] = field(default_factory=dict)
    top1: float | None = None
    accuracy_at_given_threshold: float | None = None
    roc: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))  # (FAR, TAR)

    @property
    def auc(self) -> float:
        return roc_auc(*self.roc)

    def metrics(self, split: str) -> dict[str, float]:
        """The numbers as stride logs them (`val_verification_acc`, `test_tar_at_far_1e-03`, ...)."""
        numbers = {f"{split}_verification_acc": self.accuracy.mean,
                   f"{split}_verification_acc_std": self.accuracy.std,
                   f"{split}_threshold": self.threshold, f"{split}_roc_auc": self.auc,
                   **{f"{split}_tar_at_far_{far:.0e}": tar for far, tar in self.tar_at_far.items()}}
        if self.top1 is not None:
            numbers[f"{split}_top1"] = self.top1
        if self.accuracy_at_given_threshold is not None:
            numbers[f"{split}_acc_at_model_threshold"] = self.accuracy_at_given_threshold
        return numbers


def verification_report(embeddings: np.ndarray, labels: np.ndarray, indices: np.ndarray, pairs: VerificationPairs,
                        *, order: float = 2.0, fars: Sequence[float] = (1e-2, 1e-3),
                        given_threshold: float | None = None) -> VerificationReport:
    """All the numbers of one split from its samples' embeddings (rows), identities and indices (keys).

    Pairs naming a sample that is not among `indices` are left out (a partial pass, e.g. Lightning's sanity
    check); the caller compares `pairs` with what it expected."""
    order_by_index = np.argsort(indices, kind="stable")
    embeddings, labels, indices = embeddings[order_by_index], labels[order_by_index], indices[order_by_index]
    if len(indices) == 0:
        raise StrideError("no samples to verify pairs on")
    row_a = np.minimum(np.searchsorted(indices, pairs.first), len(indices) - 1)
    row_b = np.minimum(np.searchsorted(indices, pairs.second), len(indices) - 1)
    present = (indices[row_a] == pairs.first) & (indices[row_b] == pairs.second)
    kept = pairs.subset(present)
    distances = pair_distances(embeddings, row_a[present], row_b[present], order)
    threshold, _ = best_threshold(distances, kept.same)
    far, tar, _ = roc_curve(distances, kept.same)
    rates = {rate: found[0] for rate in fars if (found := tar_at_far(distances, kept.same, rate)) is not None}
    return VerificationReport(
        pairs=len(kept), accuracy=fold_accuracy(distances, kept.same, kept.fold), threshold=threshold,
        tar_at_far=rates, top1=identification_top1(embeddings, labels, order),
        accuracy_at_given_threshold=None if given_threshold is None else accuracy_at(distances, kept.same,
                                                                                     given_threshold),
        roc=(far, tar))
