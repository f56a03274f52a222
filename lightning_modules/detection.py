"""One LightningModule for detection (docs/models.md, A3 and C, YOLO v1): anchor matching, the losses, AP.

Batches are `(images, targets)`: N x 3 x S x S images in [0, 1] and one dict per image with
"boxes" (k, 4) x1, y1, x2, y2 in batch pixels, "scale" (batch pixels per original pixel), "key"
and "annotation" (the sample's json). Optional "labels" (k,) give foreground classes (default 0:
the face). How anchors are matched and what the loss weighs are the network's hyper-parameters
(`network.loss`), so the config's model section describes the whole detector. Any
`stride.architectures.face_detector.Detector` trains here: FaceNet's anchor outputs are matched and
scored below, YOLO's grid outputs by their own sum-squared loss (`stride.architectures.yolo`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stride.architectures.face_detector import DetectionLosses, Detector, DetectorOutput, FaceDetector, LossSettings
from stride.architectures.yolo import YoloDetector, YoloOutput, yolo_loss
from stride.config.schema import OptimConfig, ScheduleConfig
from stride.lightning_modules.base import StrideModule

NEGATIVE, IGNORED = -1, -2  # match_anchors' codes for anchors without a face
MATCH_CHUNK = 128  # faces per IoU matrix: a crowd of 1,000+ faces x 10^5 anchors would need gigabytes at once
AP_IOU = 0.5  # WIDER FACE's IoU threshold


def match_anchors(anchors: Tensor, boxes: Tensor, positive_iou: float, negative_iou: float,
                  match_best_anchor: bool = True) -> Tensor:
    """(A,) index of each anchor's face, NEGATIVE (best IoU < negative_iou) or IGNORED (in between).

    An anchor is positive at IoU >= positive_iou with some face (the seed's rule, with 0.5), matched to
    the face it overlaps most. `match_best_anchor` adds the standard low-quality matches (Faster R-CNN;
    torchvision's Matcher): every anchor that is some face's best (ties included, IoU > 0) is positive
    too, so small or oddly shaped faces are trained even when no anchor reaches positive_iou.
    """
    from torchvision.ops import box_iou

    if boxes.numel() == 0:
        return torch.full((anchors.shape[0],), NEGATIVE, dtype=torch.long, device=anchors.device)
    best_iou = torch.full((anchors.shape[0],), -1.0, device=anchors.device)
    best_box = torch.zeros(anchors.shape[0], dtype=torch.long, device=anchors.device)
    best_anchors = []
    for start in range(0, boxes.shape[0], MATCH_CHUNK):
        iou = box_iou(boxes[start:start + MATCH_CHUNK], anchors)  # (faces, A)
        chunk_iou, chunk_box = iou.max(dim=0)
        better = chunk_iou > best_iou
        best_iou, best_box = torch.where(better, chunk_iou, best_iou), torch.where(better, chunk_box + start, best_box)
        if match_best_anchor:
            highest = iou.max(dim=1, keepdim=True).values
            best_anchors.append(torch.nonzero((iou == highest) & (highest > 0), as_tuple=True)[1])
    matched = torch.where(best_iou >= positive_iou, best_box,
                          torch.where(best_iou < negative_iou, NEGATIVE, IGNORED))
    if match_best_anchor:
        low_quality = torch.cat(best_anchors)
        matched[low_quality] = best_box[low_quality]
    return matched


def detection_loss(output: DetectorOutput | YoloOutput, anchors: Tensor, targets: list[dict[str, Any]],
                   network: Detector) -> DetectionLosses:
    """The network's loss (`network.loss`) over a batch, `anchors` being `network.anchors` of the batch's size.

    YOLO's outputs go to its own loss (eq. 3 of Redmon et al.), whose anchors are the grid cells. FaceNet's
    anchors are matched to the faces here; images without faces have only negative anchors.

    "cross_entropy" (eq. 58 of the TCN study): mean cross-entropy over every anchor not ignored
    (binary for a sigmoid classifier) + the Smooth-L1 of the 4 offsets summed, averaged over the
    positive anchors. "focal" (RetinaNet, eq. 61 of the Swedish variant): focal loss summed over the
    anchors not ignored, divided by the positives, + the same Smooth-L1.
    """
    if isinstance(output, YoloOutput):
        return yolo_loss(output, anchors, targets, cast(YoloDetector, network).loss)
    detector = cast(FaceDetector, network)
    settings = detector.loss
    logits, deltas = output.class_logits.float(), output.box_deltas.float()
    matched, classes, box_targets = [], [], []
    for target in targets:
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float32, device=anchors.device).reshape(-1, 4)
        labels = torch.as_tensor(target.get("labels", torch.zeros(len(boxes))), device=anchors.device).long()
        image_matched = match_anchors(anchors, boxes, settings.positive_iou, settings.negative_iou,
                                      settings.match_best_anchor)
        positive = image_matched >= 0
        face = image_matched.clamp(min=0)
        matched.append(image_matched)
        classes.append(torch.where(positive, labels[face] if len(labels) else 0, -1))
        box_targets.append(detector.box_coder.encode(boxes[face[positive]], anchors[positive]))
    matched_all, classes_all = torch.stack(matched), torch.stack(classes)
    positive, counted = matched_all >= 0, matched_all != IGNORED
    positives = positive.sum().clamp(min=1)
    classification = _classification_loss(logits[counted], classes_all[counted], detector.classifier, settings,
                                          positives)
    regression = F.smooth_l1_loss(deltas[positive], torch.cat(box_targets), beta=settings.smooth_l1_beta,
                                  reduction="sum") / positives
    return DetectionLosses(classification + regression, classification, regression)


def _classification_loss(logits: Tensor, classes: Tensor, classifier: str, settings: LossSettings,
                         positives: Tensor) -> Tensor:
    """`classes`: the foreground class of each counted anchor, -1 for background."""
    if logits.shape[0] == 0:
        return logits.sum()
    if classifier == "softmax":
        target = classes + 1  # background is logit 0
        if settings.loss == "cross_entropy":
            return F.cross_entropy(logits, target)
        log_p = torch.log_softmax(logits, dim=-1).gather(1, target.unsqueeze(1)).squeeze(1)
        alpha = 1.0 if settings.focal_alpha is None else torch.where(
            target > 0, settings.focal_alpha, 1 - settings.focal_alpha)
        return (-alpha * (1 - log_p.exp()) ** settings.focal_gamma * log_p).sum() / positives
    one_hot = torch.zeros_like(logits)
    foreground = classes >= 0
    one_hot[foreground, classes[foreground]] = 1.0
    if settings.loss == "cross_entropy":
        return F.binary_cross_entropy_with_logits(logits, one_hot)
    from torchvision.ops import sigmoid_focal_loss

    alpha = -1.0 if settings.focal_alpha is None else settings.focal_alpha  # torchvision: < 0 is unweighted
    return sigmoid_focal_loss(logits, one_hot, alpha=alpha, gamma=settings.focal_gamma, reduction="sum") / positives


class ImageDetections(NamedTuple):
    """One test image's detections in its original pixels and its annotation, for the task's figures."""

    detections: np.ndarray  # (k, 5) x1, y1, x2, y2, score
    annotation: dict[str, Any]


def true_boxes(annotation: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(x1, y1, x2, y2 of every annotated face, which of them count): faces of zero width or height are
    kept out of the count, as they are out of the training targets."""
    boxes = np.asarray(annotation["boxes"], dtype=np.float64).reshape(-1, 4)
    xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    return xyxy, np.asarray(annotation["trainable"], dtype=bool).reshape(-1)


def pack_images(predictions: list[np.ndarray], ground_truth: list[np.ndarray],
                keep: list[np.ndarray] | None = None) -> np.ndarray:
    """Rows (image, kind, x1, y1, x2, y2, score) of every prediction (kind 0), counted face (1) and ignored
    face (2): one float64 array per rank, so ranks can all-gather them as tensors (no pickled objects)."""
    rows = [np.zeros((0, 7))]
    for image, (found, faces) in enumerate(zip(predictions, ground_truth)):
        kinds = np.where(keep[image], 1.0, 2.0) if keep is not None else np.ones(len(faces))
        rows.append(np.column_stack([np.full(len(found), image), np.zeros(len(found)), found]))
        rows.append(np.column_stack([np.full(len(faces), image), kinds, faces, np.zeros(len(faces))]))
    return np.concatenate(rows).astype(np.float64)


def unpack_images(rows: np.ndarray, images: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The inverse of `pack_images` for `images` images: (predictions, faces, which faces count)."""
    index = rows[:, 0].astype(np.int64)
    face = rows[:, 1] > 0
    predictions = [rows[(index == i) & ~face, 2:7] for i in range(images)]
    ground_truth = [rows[(index == i) & face, 2:6] for i in range(images)]
    keep = [rows[(index == i) & face, 1] == 1 for i in range(images)]
    return predictions, ground_truth, keep


class DetectionModule(StrideModule):
    """The network's detection loss; per split the loss, and on val/test the AP at IoU 0.5
    (`val_ap`, `test_ap`) over every image of the split.

    AP is computed as `stride evaluate` computes it from the logged model: detections in each image's
    original pixels against every annotated face, the untrainable ones ignored (neither hits nor misses),
    by the WIDER FACE protocol (whose +1 pixel in box sizes makes IoU depend on the scale, so batch pixels
    would not do). Images without an annotation (batches made elsewhere) fall back to the batch's target
    boxes in batch pixels. Under DDP each rank's images are all-gathered before AP, so every rank logs
    the same number.
    """

    network: Detector

    def __init__(self, network: Detector, optim: OptimConfig, schedule: ScheduleConfig,
                 description: dict[str, Any] | None = None):
        super().__init__(network, optim, schedule, description)
        self._predictions: list[np.ndarray] = []  # this epoch's val or test images, this rank's
        self._ground_truth: list[np.ndarray] = []
        self._keep: list[np.ndarray] = []  # which faces of each image count
        # after testing: this rank's test images (all of them without DDP), in original pixels
        self.last_test_predictions: list[ImageDetections] = []

    def _step(self, batch: tuple[Tensor, list[dict[str, Any]]], split: str) -> Tensor:
        images, targets = batch
        output = self(images)
        height, width = images.shape[-2:]
        losses = detection_loss(output, self.network.anchors(height, width, images.device), targets, self.network)
        size = len(targets)
        self.log_mean(f"{split}_loss", losses.total, size)
        self.log_mean(f"{split}_classification_loss", losses.classification, size)
        self.log_mean(f"{split}_box_loss", losses.regression, size)
        if split == "train":
            self.log_step_loss(losses.total)
        else:
            self._collect(output, targets, height, width, split)
        return losses.total

    def _collect(self, output: DetectorOutput | YoloOutput, targets: list[dict[str, Any]], height: int, width: int,
                 split: str) -> None:
        padded = self.network.postprocess(output, height, width).cpu().numpy()  # one transfer per batch
        for rows, target in zip(padded, targets):
            found = rows[rows[:, 4] > 0].astype(np.float64)
            annotation = target.get("annotation")
            scale = float(target.get("scale", 1.0))
            if annotation and "boxes" in annotation and "trainable" in annotation:
                found[:, :4] /= scale
                faces, keep = true_boxes(annotation)
            else:
                faces = torch.as_tensor(target["boxes"]).reshape(-1, 4).double().cpu().numpy()
                keep = np.ones(len(faces), bool)
            self._predictions.append(found)
            self._ground_truth.append(faces)
            self._keep.append(keep)
            if split == "test":
                original = rows[rows[:, 4] > 0].copy()
                original[:, :4] /= scale
                self.last_test_predictions.append(ImageDetections(original, annotation or {}))

    def _reset(self) -> None:
        self._predictions, self._ground_truth, self._keep = [], [], []

    def _split_images(self) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Every rank's images of this epoch (all-gathered as padded tensors under DDP)."""
        if self.trainer.world_size == 1:
            return self._predictions, self._ground_truth, self._keep
        rows = torch.from_numpy(pack_images(self._predictions, self._ground_truth, self._keep)).to(self.device)
        counts = self.all_gather_tensor(torch.tensor([rows.shape[0], len(self._predictions)], device=self.device))
        padded = rows.new_zeros(int(counts[:, 0].max()), 7)
        padded[:rows.shape[0]] = rows
        gathered = self.all_gather_tensor(padded).cpu().numpy()
        predictions, ground_truth, keep = [], [], []
        for rank_rows, (count, images) in zip(gathered, counts.cpu().tolist()):
            found, faces, counted = unpack_images(rank_rows[:count], images)
            predictions += found
            ground_truth += faces
            keep += counted
        return predictions, ground_truth, keep

    def _log_ap(self, split: str) -> None:
        from stride.metrics.detection_ap import wider_face_ap

        predictions, ground_truth, keep = self._split_images()
        faces = sum(int(k.sum()) for k in keep)
        ap = wider_face_ap(predictions, ground_truth, keep, iou_threshold=AP_IOU).ap if faces else 0.0
        self.log(f"{split}_ap", float(ap), prog_bar=split == "val")  # the same on every rank: no sync
        if split == "test":
            self.log("test_samples", float(len(predictions)))
        self._reset()

    def _eval_epoch_start(self, split: str) -> None:
        self._reset()
        if split == "test":
            self.last_test_predictions = []

    def _log_epoch(self, split: str) -> None:
        if split != "train":
            self._log_ap(split)
