"""The embedding task's numbers and losses on hand-computed examples (docs/embedding.md): the LFW protocol, TAR at
FAR, identification top-1, triplet mining, the contrastive loss and the verification head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stride.config.schema import OptimConfig, ScheduleConfig
from stride.errors import StrideError
from stride.lightning_modules.embedding import (
    EmbeddingModule,
    EmbeddingNetwork,
    LossSettings,
    VerificationHead,
    batch_hard_triplets,
    contrastive_loss,
    semi_hard_triplets,
    triplet_loss,
)
from stride.metrics.verification import (
    VerificationPairs,
    best_threshold,
    fold_accuracy,
    identification_top1,
    roc_curve,
    tar_at_far,
    verification_report,
)
from stride.serving import get_serving
from stride.serving.embedding import split_outputs
from stride.tasks import DataFacts


# -- metrics -------------------------------------------------------------------------------------------------
def test_best_threshold_maximises_accuracy_and_takes_the_smallest_of_ties():
    # sorted: 0.1 same, 0.35 different, 0.4 same, 0.8 different: accepting 1 or 3 pairs is right 3 times of 4
    threshold, accuracy = best_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([True, True, False, False]))
    assert threshold == pytest.approx(0.225) and accuracy == 0.75


def test_best_threshold_at_the_ends():
    threshold, accuracy = best_threshold(np.array([0.5, 0.7]), np.array([False, False]))
    assert threshold < 0.5 and accuracy == 1.0
    threshold, accuracy = best_threshold(np.array([0.5, 0.7]), np.array([True, True]))
    assert threshold == 0.7 and accuracy == 1.0


def test_ten_fold_protocol_chooses_each_threshold_on_the_other_nine_folds():
    # folds 0-8: a same pair at 0.2 and a different pair at 0.8; fold 9 inverted (0.9 same, 0.1 different)
    distances = np.array([0.2, 0.8] * 9 + [0.9, 0.1])
    same = np.array([True, False] * 10)
    folds = np.repeat(np.arange(10), 2)
    result = fold_accuracy(distances, same, folds)
    # for folds 0-8 the nine others hold 8 normal folds and the inverted one: 0.5 is still best (16 of 18);
    # for fold 9 the nine normal folds give 0.5 too, which gets both of its pairs wrong
    assert result.thresholds == pytest.approx((0.5,) * 10)
    assert result.accuracies == (1.0,) * 9 + (0.0,)
    assert result.mean == pytest.approx(0.9)
    assert result.std == pytest.approx(math.sqrt(0.1))  # sqrt((9 * 0.1^2 + 0.9^2) / 9), LFW's sigma-hat
    assert result.standard_error == pytest.approx(math.sqrt(0.1) / math.sqrt(10))


def test_the_fold_protocol_needs_two_folds():
    with pytest.raises(StrideError, match="at least 2 folds"):
        fold_accuracy(np.array([0.1, 0.2]), np.array([True, False]), np.array([0, 0]))


def test_tar_at_far_only_where_the_impostor_pairs_resolve_it():
    impostors = np.arange(1, 101) / 100  # 100 impostor pairs at 0.01 .. 1.00
    genuine = np.array([0.005, 0.02, 0.5])
    distances = np.concatenate([genuine, impostors])
    same = np.concatenate([np.ones(3, bool), np.zeros(100, bool)])
    tar, threshold = tar_at_far(distances, same, 1e-2)  # at most one impostor accepted: threshold 0.01
    assert threshold == pytest.approx(0.01) and tar == pytest.approx(1 / 3)
    assert tar_at_far(distances, same, 1e-3) is None  # 100 impostor pairs cannot tell 1e-3 from 0


def test_roc_curve_on_four_pairs():
    far, tar, thresholds = roc_curve(np.array([0.1, 0.3, 0.2, 0.4]), np.array([True, False, True, False]))
    assert far.tolist() == [0, 0, 0, 0.5, 1] and tar.tolist() == [0, 0.5, 1, 1, 1]
    assert thresholds[1:].tolist() == [0.1, 0.2, 0.3, 0.4]


def test_identification_top1_matches_probes_to_the_first_sample_of_each_identity():
    embeddings = np.array([[0.0], [10.0], [1.0], [4.0]])
    labels = np.array([0, 1, 0, 1])
    # gallery: samples 0 (identity 0) and 1 (identity 1); probe 2 is nearest 0 (right), probe 3 too (wrong)
    assert identification_top1(embeddings, labels) == 0.5


def test_report_leaves_out_pairs_of_samples_not_seen_and_orders_rows_by_index():
    embeddings = np.array([[0.0, 0.0], [3.0, 0.0], [0.1, 0.0], [3.1, 0.0]])
    labels = np.array([1, 0, 1, 0])
    indices = np.array([12, 10, 13, 11])  # rows in any order, as ranks deliver them
    pairs = VerificationPairs(first=np.array([10, 12, 10, 11, 10, 99]), second=np.array([11, 13, 12, 13, 13, 10]),
                              same=np.array([True, True, False, False, False, True]),
                              fold=np.array([0, 1, 0, 1, 1, 0]))
    report = verification_report(embeddings, labels, indices, pairs, given_threshold=0.5)
    assert report.pairs == 5  # index 99 was not among the samples
    assert report.accuracy.mean == 1.0 and report.accuracy_at_given_threshold == 1.0
    metrics = report.metrics("val")
    assert metrics["val_verification_acc"] == 1.0 and metrics["val_top1"] == 1.0 and "val_roc_auc" in metrics


# -- mining and losses ---------------------------------------------------------------------------------------
POSITIONS = torch.tensor([0.0, 1.0, 3.5, 2.0, 10.0])  # points on a line: distance = |x_i - x_j|
LABELS = torch.tensor([0, 0, 0, 1, 1])
DISTANCES = (POSITIONS[:, None] - POSITIONS[None, :]).abs()


def test_batch_hard_takes_each_anchors_farthest_positive_and_closest_negative():
    anchors, positives, negatives = batch_hard_triplets(DISTANCES, LABELS)
    assert anchors.tolist() == [0, 1, 2, 3, 4]
    assert positives.tolist() == [2, 2, 0, 4, 3]
    assert negatives.tolist() == [3, 3, 3, 1, 2]


def test_semi_hard_takes_the_closest_negative_beyond_the_positive():
    anchors, positives, negatives = semi_hard_triplets(DISTANCES, LABELS)
    assert list(zip(anchors.tolist(), positives.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1),
                                                               (3, 4), (4, 3)]
    # (1, 0): negative 3 is exactly as far as the positive, so not beyond it; (3, 4): no negative beyond 8, so
    # the farthest one; (4, 3): 0 and 1 lie beyond 8, 1 is closer
    assert negatives.tolist() == [3, 4, 4, 4, 4, 4, 0, 1]


def test_triplet_loss_is_zero_when_every_margin_is_met():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    for mining in ("batch_hard", "semi_hard"):
        loss, active = triplet_loss(embeddings, labels, margin=0.2, mining=mining)
        assert loss.item() == 0 and active.item() == 0  # |a-p|^2 = 0, |a-n|^2 = 2 > 0.2


def test_triplet_loss_value_on_squared_distances():
    embeddings = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    loss, active = triplet_loss(embeddings, labels, margin=0.2, mining="batch_hard")
    # anchor 0: |a-p|^2 = 0.8, |a-n|^2 = 2 -> 0; anchor 1: 0.8 - 0.4 + 0.2 = 0.6; anchor 2 has no positive
    assert loss.item() == pytest.approx(0.3) and active.item() == pytest.approx(0.5)


def test_a_batch_without_triplets_gives_zero_loss_with_a_gradient():
    embeddings = torch.randn(3, 4, requires_grad=True)
    loss, _ = triplet_loss(embeddings, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0 and embeddings.grad is not None


def test_contrastive_loss_as_hadsell_eq_4():
    same = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # D^2 = 0.8
    assert contrastive_loss(same, torch.tensor([0, 0]), margin=1.0).item() == pytest.approx(0.8 / 2 / 2)
    different = contrastive_loss(same, torch.tensor([0, 1]), margin=1.0).item()
    assert different == pytest.approx((1 - math.sqrt(0.8)) ** 2 / 2 / 2)
    far = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # D = 2 beyond the margin: nothing to push
    assert contrastive_loss(far, torch.tensor([0, 1]), margin=1.0).item() == 0


def test_verification_head_is_a_logistic_unit_on_the_weighted_absolute_difference():
    head = VerificationHead(2)
    with torch.no_grad():
        head.raw_weights.copy_(torch.tensor([0.0, 100.0]))  # weights ln 2 and ~100
        head.bias.fill_(1.0)
    embeddings = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # |difference| = (1, 0): distance ln 2
    logit = 1.0 - math.log(2)
    expected_same = -math.log(1 / (1 + math.exp(-logit)))
    expected_different = -math.log(1 - 1 / (1 + math.exp(-logit)))
    assert head.loss(embeddings, torch.tensor([0, 0])).item() == pytest.approx(expected_same / 2)
    assert head.loss(embeddings, torch.tensor([0, 1])).item() == pytest.approx(expected_different / 2)


# -- the served model ----------------------------------------------------------------------------------------
def module_with(loss: str) -> EmbeddingModule:
    network = EmbeddingNetwork(torch.nn.Flatten(), 4, 3)
    module = EmbeddingModule(network, 3, LossSettings(loss), OptimConfig(), ScheduleConfig())
    module.threshold.fill_(0.7)
    return module


def test_the_served_model_carries_its_threshold_and_distance():
    facts = DataFacts("embedding", (1, 2, 2), 5)
    images = torch.rand(2, 1, 2, 2)
    plain = module_with("triplet")
    exported = get_serving("embedding").export(plain, facts)
    assert exported.outputs.shape == (5,)
    embeddings, threshold, order = split_outputs(exported.network(images).detach().numpy())
    assert threshold == pytest.approx(0.7) and order == 2.0
    np.testing.assert_allclose(embeddings, plain.network(images).detach().numpy(), rtol=1e-6)
    head = module_with("verification_head")
    embeddings, _, order = split_outputs(get_serving("embedding").export(head, facts).network(images).detach().numpy())
    # the head's weighted L1 distance is the plain L1 distance of embeddings scaled by its weights
    assert order == 1.0
    np.testing.assert_allclose(embeddings, (head.network(images) * head.head.weights).detach().numpy(), rtol=1e-6)


def test_a_module_never_validated_has_no_threshold_to_serve():
    module = module_with("triplet")
    module.threshold.fill_(float("nan"))
    with pytest.raises(StrideError, match="no verification threshold"):
        get_serving("embedding").export(module, DataFacts("embedding", (1, 2, 2), 5))
