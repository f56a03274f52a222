"""YOLO v1 (Redmon et al. 2016, "You Only Look Once"), a detector of the detection task (docs/models.md, C, YOLO v1).

The image is an S x S grid. Each cell predicts B boxes, each (x, y, sqrt(w), sqrt(h), confidence), and one
set of C conditional class probabilities: x, y are the box centre's offset inside the cell in cell sizes, w, h
are fractions of the image (their square roots, so that an error costs a small box more than a large one,
sec. 2.2), and every output is linear, as in the paper. The cell that holds a box's centre is responsible for
it, through the one of its B predictors whose box overlaps it most.

The network is one of stride's ResNets (conv1-conv5, as FaceNet's backbone) followed by the paper's detection
head (sec. 2.2): 3x3 convolutions with leaky ReLU (0.1), two fully connected layers with dropout between them.
An adaptive average pool brings conv5 to S x S before them, so any input size and grid size fit (the paper's
network reaches 7 x 7 from 448 px by striding).

The loss (eq. 3) is `yolo_loss`; lightning_modules.detection hands YOLO outputs to it. The grid cells are this
detector's `anchors`: the boxes its outputs are relative to, so the detection task and module treat both
detectors alike. Inference multiplies each box's confidence by its cell's class probability (eq. 2's
class-specific confidence) and keeps the best boxes after NMS, as FaceNet does, so the exported model
returns the same N x K x 5 rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import Tensor, nn

from stride.architectures.face_detector import (
    BACKBONE_CHANNELS,
    Backbone,
    DetectionLosses,
    Detector,
    InferenceSettings,
    UnitInterval,
    resnet_features,
    select_detections,
)
from stride.architectures.registry import register
from stride.errors import StrideError

BOX_FIELDS = 5  # x, y, sqrt(w), sqrt(h), confidence
LEAKY_SLOPE = 0.1  # sec. 2.2: "leaky rectified linear activation", phi(x) = x if x > 0 else 0.1 x


class YoloOutput(NamedTuple):
    boxes: Tensor  # (N, S, S, B, 5): x, y inside the cell, sqrt(w), sqrt(h) of the image, confidence
    class_probabilities: Tensor  # (N, S, S, C): Pr(class | object), one set per cell


@dataclass(frozen=True)
class YoloLossSettings:
    lambda_coord: float  # weight of the coordinate terms (the paper: 5)
    lambda_noobj: float  # weight of the confidence of predictors responsible for no object (the paper: 0.5)


class YoloHead(nn.Module):
    """conv5 features -> (N, S * S * (5B + C)): convolutions, a pool to S x S, two fully connected layers."""

    def __init__(self, in_channels: int, convs: int, channels: int, grid_size: int, hidden_features: int,
                 dropout: float, outputs_per_cell: int):
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(convs):
            layers += [nn.Conv2d(in_channels if index == 0 else channels, channels, 3, padding=1),
                       nn.LeakyReLU(LEAKY_SLOPE)]
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid_size)
        pooled = (channels if convs else in_channels) * grid_size * grid_size
        self.fully_connected = nn.Sequential(
            nn.Flatten(), nn.Linear(pooled, hidden_features), nn.LeakyReLU(LEAKY_SLOPE), nn.Dropout(dropout),
            nn.Linear(hidden_features, grid_size * grid_size * outputs_per_cell))

    def forward(self, features: Tensor) -> Tensor:
        return self.fully_connected(self.pool(self.convs(features)))


def grid_cells(grid_size: int, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """(S * S, 4) cells x1, y1, x2, y2 of a height x width image, row by row: the order of the outputs."""
    steps = torch.arange(grid_size + 1, device=device, dtype=torch.float32) / grid_size
    ys, xs = steps * height, steps * width
    y1, x1 = torch.meshgrid(ys[:-1], xs[:-1], indexing="ij")
    y2, x2 = torch.meshgrid(ys[1:], xs[1:], indexing="ij")
    return torch.stack([x1, y1, x2, y2], dim=-1).reshape(-1, 4)


def decode_boxes(boxes: Tensor, cells: Tensor, grid_size: int) -> Tensor:
    """(N, S * S, B, >= 4) predictions x, y, sqrt(w), sqrt(h) -> (N, S * S, B, 4) x1, y1, x2, y2 pixels."""
    cell = cells[:, None, :]  # one row per cell, broadcast over its B predictors
    cell_width, cell_height = cell[..., 2] - cell[..., 0], cell[..., 3] - cell[..., 1]
    centre_x = cell[..., 0] + boxes[..., 0] * cell_width
    centre_y = cell[..., 1] + boxes[..., 1] * cell_height
    half_width = boxes[..., 2] ** 2 * cell_width * grid_size / 2
    half_height = boxes[..., 3] ** 2 * cell_height * grid_size / 2
    return torch.stack([centre_x - half_width, centre_y - half_height, centre_x + half_width,
                        centre_y + half_height], dim=-1)


def encode_boxes(boxes: Tensor, cells: Tensor, grid_size: int) -> Tensor:
    """The inverse of `decode_boxes` for (k, 4) pixel boxes and the (k, 4) cells holding their centres."""
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cell_width, cell_height = cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]
    centre_x, centre_y = boxes[:, 0] + width / 2, boxes[:, 1] + height / 2
    return torch.stack([(centre_x - cells[:, 0]) / cell_width, (centre_y - cells[:, 1]) / cell_height,
                        torch.sqrt(width / (cell_width * grid_size)), torch.sqrt(height / (cell_height * grid_size))],
                       dim=-1)


def paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boxes a[..., i] and b[..., i] (broadcast), x1, y1, x2, y2; 0 where both are empty."""
    inter_w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    inter_h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = inter_w * inter_h
    area = lambda box: (box[..., 2] - box[..., 0]).clamp(min=0) * (box[..., 3] - box[..., 1]).clamp(min=0)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


def cell_objects(boxes: Tensor, grid_size: int, height: float, width: float) -> tuple[Tensor, Tensor]:
    """(cells that hold an object, the index of that object in `boxes`): the cell holding a box's centre is
    responsible for it. A cell predicts one object (sec. 2.4); where several centres share a cell, the largest
    box is its object (stride's choice: the paper does not say, its code keeps whichever box its label file lists
    last)."""
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    column = (centre_x * grid_size / width).long().clamp(0, grid_size - 1)
    row = (centre_y * grid_size / height).long().clamp(0, grid_size - 1)
    cell = row * grid_size + column
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    largest = area.new_full((grid_size * grid_size,), -1.0).scatter_reduce(0, cell, area, "amax")
    candidate = area == largest[cell]
    index = torch.arange(len(boxes), device=boxes.device)
    owner = torch.full((grid_size * grid_size,), -1, dtype=torch.long, device=boxes.device).scatter_reduce(
        0, cell[candidate], index[candidate], "amax")  # ties of area: the later box, deterministically
    cells = torch.nonzero(owner >= 0).squeeze(1)
    return cells, owner[cells]


def responsible_predictors(predicted: Tensor, truth: Tensor, predicted_codes: Tensor,
                           true_codes: Tensor) -> tuple[Tensor, Tensor]:
    """(which of each object cell's B predictors is responsible for its object, that predictor's IoU with it).

    `predicted` (k, B, 4) and `truth` (k, 4) are pixel boxes, the codes their (x, y, sqrt w, sqrt h). The
    responsible predictor "has the highest current IOU with the ground truth" (sec. 2.2); when no predictor
    overlaps the object at all, the one nearest in those codes (the authors' code does so, rather than always
    taking the first).
    """
    iou = paired_iou(predicted, truth[:, None, :])  # (k, B)
    distance = ((predicted_codes - true_codes[:, None, :]) ** 2).sum(dim=-1)
    best = torch.where(iou.amax(dim=1) > 0, iou.argmax(dim=1), distance.argmin(dim=1))
    return best, iou.gather(1, best[:, None]).squeeze(1)


def yolo_loss(output: YoloOutput, cells: Tensor, targets: list[dict[str, Any]],
              settings: YoloLossSettings) -> DetectionLosses:
    """Eq. 3 of Redmon et al. 2016, summed over each image's cells and averaged over the images.

    lambda_coord * [(x - x^)^2 + (y - y^)^2 + (sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2] over responsible
    predictors; (C - C^)^2 over responsible predictors with C^ = their IoU with the object; lambda_noobj *
    C^2 over every other predictor; sum over classes of (p(c) - p^(c))^2 over cells holding an object.
    `regression` is the coordinate terms, `classification` the confidence and class terms.
    """
    boxes, probabilities = output.boxes.float(), output.class_probabilities.float()
    images, grid_size, _, per_cell, _ = boxes.shape
    boxes = boxes.reshape(images, grid_size * grid_size, per_cell, BOX_FIELDS)
    probabilities = probabilities.reshape(images, grid_size * grid_size, -1)
    width, height = float(cells[-1, 2]), float(cells[-1, 3])  # the last cell's corner is the image's
    predicted = decode_boxes(boxes.detach(), cells, grid_size)
    responsible = torch.zeros(boxes.shape[:3], dtype=torch.bool, device=boxes.device)
    coordinates, object_confidence, class_terms = boxes.new_zeros(()), boxes.new_zeros(()), boxes.new_zeros(())
    for image, target in enumerate(targets):
        truth = torch.as_tensor(target["boxes"], dtype=torch.float32, device=boxes.device).reshape(-1, 4)
        if len(truth) == 0:
            continue
        labels = torch.as_tensor(target.get("labels", torch.zeros(len(truth))), device=boxes.device).long()
        cell, face = cell_objects(truth, grid_size, height, width)
        true_codes = encode_boxes(truth[face], cells[cell], grid_size)
        codes = boxes[image, cell]  # (k, B, 5)
        best, iou = responsible_predictors(predicted[image, cell], truth[face], codes[..., :4].detach(), true_codes)
        responsible[image, cell, best] = True
        chosen = codes[torch.arange(len(cell), device=boxes.device), best]  # (k, 5)
        coordinates = coordinates + ((chosen[:, :4] - true_codes) ** 2).sum()
        object_confidence = object_confidence + ((chosen[:, 4] - iou) ** 2).sum()
        one_hot = torch.nn.functional.one_hot(labels[face], probabilities.shape[-1]).float()
        class_terms = class_terms + ((probabilities[image, cell] - one_hot) ** 2).sum()
    no_object = (boxes[..., 4][~responsible] ** 2).sum()
    regression = settings.lambda_coord * coordinates / images
    classification = (object_confidence + settings.lambda_noobj * no_object + class_terms) / images
    return DetectionLosses(regression + classification, classification, regression)


class YoloDetector(Detector):
    """Images in [0, 1] (N x 3 x H x W) -> `YoloOutput` over the S x S cells of `anchors(H, W)`."""

    def __init__(self, backbone: nn.Module, head: YoloHead, grid_size: int, boxes_per_cell: int, num_classes: int,
                 loss: YoloLossSettings, inference: InferenceSettings):
        super().__init__(inference)
        self.backbone, self.head = backbone, head
        self.grid_size, self.boxes_per_cell, self.num_classes = grid_size, boxes_per_cell, num_classes
        self.loss = loss

    def forward(self, images: Tensor) -> YoloOutput:
        conv5 = self.backbone(self.normalize(images))[-1]
        cells = self.head(conv5).view(-1, self.grid_size, self.grid_size,
                                      self.boxes_per_cell * BOX_FIELDS + self.num_classes)
        boxes = cells[..., :self.boxes_per_cell * BOX_FIELDS]
        return YoloOutput(boxes.reshape(*boxes.shape[:3], self.boxes_per_cell, BOX_FIELDS),
                          cells[..., self.boxes_per_cell * BOX_FIELDS:])

    def anchors(self, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
        """The S x S grid cells: what YOLO's outputs are relative to."""
        return grid_cells(self.grid_size, height, width, device)

    def decode(self, output: YoloOutput, height: int, width: int) -> tuple[Tensor, Tensor]:
        """(N, S * S * B, 4) boxes in pixels, clipped to the image, and (N, S * S * B) scores: each box's
        confidence times its cell's likeliest class probability (eq. 2), both clamped to [0, 1] (the outputs
        are linear)."""
        boxes = output.boxes.float()
        images = boxes.shape[0]
        cells = self.anchors(height, width, boxes.device)
        pixels = decode_boxes(boxes.reshape(images, -1, self.boxes_per_cell, BOX_FIELDS), cells, self.grid_size)
        limits = torch.tensor([width, height, width, height], dtype=pixels.dtype, device=pixels.device)
        pixels = torch.minimum(pixels.clamp(min=0), limits).reshape(images, -1, 4)
        class_score = output.class_probabilities.float().clamp(0, 1).amax(dim=-1, keepdim=True)  # (N, S, S, 1)
        scores = boxes[..., 4].clamp(0, 1) * class_score
        return pixels, scores.reshape(images, -1)

    def postprocess(self, output: YoloOutput, height: int, width: int, score_threshold: float | None = None,
                    nms_iou: float | None = None, max_detections: int | None = None) -> Tensor:
        settings = self.inference_settings(score_threshold=score_threshold, nms_iou=nms_iou,
                                           max_detections=max_detections)
        boxes, scores = self.decode(output, height, width)
        return select_detections(boxes, scores, settings.score_threshold, settings.nms_iou, settings.max_detections)


@register("yolo_v1", task="detection")
def build_yolo_v1(
        *, input_shape: tuple[int, ...], num_classes: int,
        grid_size: PositiveInt = 7, boxes_per_cell: PositiveInt = 2,
        backbone: Backbone = "resnet18", backbone_weights: str | None = None,
        head_convs: NonNegativeInt = 4, head_channels: PositiveInt = 1024, hidden_features: PositiveInt = 4096,
        dropout: UnitInterval = 0.5, lambda_coord: NonNegativeFloat = 5.0, lambda_noobj: NonNegativeFloat = 0.5,
        score_threshold: UnitInterval = 0.05, nms_iou: UnitInterval = 0.4, max_detections: PositiveInt = 750,
) -> YoloDetector:
    """YOLO v1 (Redmon et al. 2016): S x S grid, B boxes per cell, sum-squared loss, over a ResNet backbone"""
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise StrideError(f"YOLO takes 3-channel images (C, H, W); the data's input shape is {tuple(input_shape)}")
    head = YoloHead(BACKBONE_CHANNELS[backbone][-1], head_convs, head_channels, grid_size, hidden_features, dropout,
                    boxes_per_cell * BOX_FIELDS + num_classes)
    every_box = grid_size * grid_size * boxes_per_cell  # few enough that all enter NMS
    return YoloDetector(resnet_features(backbone, backbone_weights), head, grid_size, boxes_per_cell, num_classes,
                        YoloLossSettings(lambda_coord, lambda_noobj),
                        InferenceSettings(score_threshold, nms_iou, every_box, max_detections))
