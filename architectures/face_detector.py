"""FaceNet, the TCN study's one-shot face detector, and its Swedish variant (docs/models.md, A3).

One configurable `FaceDetector`: a torchvision ResNet's conv1-conv5, a pyramid of levels
(FaceNet v1.0: each of conv2..conv5 through its own 1x1 conv, plus conv6, a stride-2 conv on
conv5; the variant: an FPN over C3-C5 plus P6), and two heads shared by every level that
predict, for each anchor, class logits and four box offsets (RetinaNet, Lin et al. 2017).
The seed's width:height ratios "1 : 2/3 and 1 : 1" are w/h in {1, 1.5}: the second, wider than
tall, is for faces turned sideways (docs/models.md, A3).

Three registered defaults:
- `facenet_v1_0`: ResNet-18, levels conv2..conv6, anchors 16..406 px, heads of 4 residual
  bottleneck blocks, 2-way softmax, mean cross-entropy + mean Smooth-L1 (eq. 58);
- `facenet_v1_1`: the same with one logit and a sigmoid (sec. 6.2.2);
- `facenet_r50_fpn`: ResNet-50 + FPN P3-P6, anchors 14..220 px, RetinaNet's conv heads
  (3 convs classify, 2 regress), sigmoid and focal loss. The seed's "alpha = 3 for the
  foreground" contradicts its own "RetinaNet's best hyper-parameters" (alpha = 0.25,
  gamma = 2), which we take.

The matching and loss options are hyper-parameters of the architecture, so one config
section describes the whole detector; the detection LightningModule reads them from
`network.loss`. Nothing is downloaded: `backbone_weights` names a local torchvision
ResNet state dict.

`Detector` is what the detection task asks of any detector; YOLO v1 (architectures/yolo.py) is
the other one, and shares the backbones, NMS and the exported model defined here.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, cast

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor, nn

from stride.architectures.anchors import AnchorGrid, BoxCoder, level_sizes
from stride.architectures.registry import register
from stride.errors import StrideError

if TYPE_CHECKING:
    from torchvision.models import ResNet

Backbone = Literal["resnet18", "resnet34", "resnet50"]
BACKBONE_CHANNELS = {"resnet18": (64, 128, 256, 512), "resnet34": (64, 128, 256, 512),
                     "resnet50": (256, 512, 1024, 2048)}  # conv2..conv5
BACKBONE_LEVELS = (2, 3, 4, 5)
Probability = Annotated[float, Field(gt=0.0, lt=1.0)]
UnitInterval = Annotated[float, Field(ge=0.0, le=1.0)]
HEAD_WEIGHT_STD = 0.01  # RetinaNet's init of the heads' last convs: initial logits ~ the prior's bias


class DetectorOutput(NamedTuple):
    class_logits: Tensor  # (N, A, C): C = classes + 1 (background first) for softmax, C = classes for sigmoid
    box_deltas: Tensor  # (N, A, 4): offsets from the anchors, see anchors.BoxCoder


class DetectionLosses(NamedTuple):
    """What every detector's loss reports (lightning_modules.detection logs each)."""

    total: Tensor
    classification: Tensor
    regression: Tensor  # the box terms


@dataclass(frozen=True)
class LossSettings:
    """How anchors are matched to faces and what the loss weighs (read by lightning_modules.detection)."""

    loss: Literal["cross_entropy", "focal"]
    positive_iou: float
    negative_iou: float  # anchors whose best IoU lies between the two are ignored
    match_best_anchor: bool  # each face's best anchor is positive whatever its IoU
    focal_alpha: float | None  # weight of positives (negatives: 1 - alpha); None: unweighted
    focal_gamma: float
    smooth_l1_beta: float


@dataclass(frozen=True)
class InferenceSettings:
    score_threshold: float
    nms_iou: float
    pre_nms_top_k: int  # highest-scoring anchors per image that enter NMS
    max_detections: int


class ResNetFeatures(nn.Module):
    """conv1-conv5 of a torchvision ResNet (its own module names, so its state dict loads as is); returns C2-C5."""

    def __init__(self, resnet: ResNet):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


def resnet_features(backbone: Backbone, weights_file: str | None) -> ResNetFeatures:
    import torchvision.models as tv  # imported on build: torchvision's models cost seconds to import

    features = ResNetFeatures(getattr(tv, backbone)(weights=None))
    if weights_file is not None:
        load_backbone_weights(features, backbone, weights_file)
    return features


def load_backbone_weights(features: ResNetFeatures, backbone: str, weights_file: str) -> None:
    """Load a torchvision ResNet state dict (its `fc` classifier, not part of conv1-conv5, is skipped)."""
    path = Path(weights_file)
    if not path.is_file():
        raise StrideError(f"model.backbone_weights: {path} is not a file (a torchvision {backbone} state dict "
                          "saved with torch.save is expected)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt files and pickled objects that are not plain tensors
        raise StrideError(f"model.backbone_weights: {path} is not a state dict readable with "
                          f"torch.load(weights_only=True): {err}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise StrideError(f"model.backbone_weights: {path} holds no state dict (a mapping of names to tensors, "
                          f"as torchvision's {backbone}().state_dict())")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = features.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    wrong = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        shown = lambda keys: ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")  # noqa: E731
        raise StrideError(f"model.backbone_weights: {path} is not a torchvision {backbone} state dict: "
                          f"missing {shown(missing) or 'none'}; unexpected {shown(unexpected) or 'none'}; "
                          f"wrong shapes {shown(wrong) or 'none'}")
    features.load_state_dict(state)


class ExtraLevels(nn.Module):
    """Levels above conv5: a 3x3 stride-2 conv on C5, each next one on the ReLU of the previous
    (RetinaNet's P6 and P7); FaceNet needs conv6 for its 256-406 px anchors."""

    def __init__(self, in_channels: int, out_channels: int, count: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, 2, 1)
                                   for i in range(count))

    def forward(self, c5: Tensor) -> list[Tensor]:
        levels: list[Tensor] = []
        for conv in self.convs:
            levels.append(conv(torch.relu(levels[-1]) if levels else c5))
        return levels


class Pyramid(nn.Module):
    """Backbone levels min_level..5 brought to the heads' width, then the extra levels.

    `top_down=False` (FaceNet v1.0): one 1x1 lateral conv per level. `top_down=True`: torchvision's
    FPN (Lin et al. 2017), whose nearest-neighbour upsampling is the Swedish variant's "k-NN".
    """

    def __init__(self, in_channels: list[int], out_channels: int, extra_levels: int, top_down: bool):
        super().__init__()
        if top_down:
            from torchvision.ops import FeaturePyramidNetwork

            self.fpn = FeaturePyramidNetwork(in_channels, out_channels)
        else:
            self.laterals = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.top_down = top_down
        self.extra = ExtraLevels(in_channels[-1], out_channels, extra_levels)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        if self.top_down:
            levels = list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features))).values())
        else:
            levels = [lateral(f) for lateral, f in zip(self.laterals, features)]
        return levels + self.extra(features[-1])


def _head_block(block: str, channels: int, norm: str) -> nn.Module:
    if block == "conv":  # RetinaNet's head: 3x3 conv + ReLU, no normalisation
        return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
    from torchvision.models.resnet import Bottleneck

    # GroupNorm by default: the heads are shared by every level, and BatchNorm's running statistics would
    # average the levels' different statistics, so evaluation would normalise each level differently from
    # training. Up to 32 groups of at least 4 channels, so a 1 x 1 level is not normalised to zeros.
    norm_layer = (lambda c: nn.GroupNorm(math.gcd(32, max(1, c // 4)), c)) if norm == "group" else nn.BatchNorm2d
    return Bottleneck(channels, channels // Bottleneck.expansion, norm_layer=norm_layer)


class Head(nn.Module):
    """Blocks then a 3x3 conv to `outputs` numbers per anchor, applied to every level with the same weights."""

    def __init__(self, channels: int, blocks: int, block: str, norm: str, anchors_per_location: int,
                 outputs: int, output_bias: list[float]):
        super().__init__()
        self.blocks = nn.Sequential(*(_head_block(block, channels, norm) for _ in range(blocks)))
        self.predict = nn.Conv2d(channels, anchors_per_location * outputs, 3, padding=1)
        nn.init.normal_(self.predict.weight, std=HEAD_WEIGHT_STD)
        assert self.predict.bias is not None  # nn.Conv2d has a bias by default
        with torch.no_grad():  # channel a * outputs + k: anchor a, output k
            self.predict.bias.copy_(torch.tensor(output_bias).repeat(anchors_per_location))
        self.outputs = outputs

    def forward(self, levels: list[Tensor]) -> Tensor:
        per_level = []
        for features in levels:
            y = self.predict(self.blocks(features))
            n, _, h, w = y.shape  # (N, A * K, H, W) -> (N, H * W * A, K): anchors.AnchorGrid's order
            per_level.append(y.view(n, -1, self.outputs, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, self.outputs))
        return torch.cat(per_level, dim=1)


def prior_bias(classifier: str, num_classes: int, prior: float) -> list[float]:
    """Biases of the class logits giving every foreground class probability `prior` at initialisation
    (RetinaNet's prior; the seed's formula is garbled): sigmoid log(pi / (1 - pi)); softmax, with the
    background logit 0, log(pi / (1 - K pi)) for each of the K foreground logits."""
    if classifier == "sigmoid":
        return [math.log(prior / (1 - prior))] * num_classes
    return [0.0] + [math.log(prior / (1 - num_classes * prior))] * num_classes


class Detector(nn.Module):
    """What the detection task, its module and its export ask of a network (FaceNet here, YOLO in
    architectures/yolo.py): images in [0, 1] in, an output its loss reads (lightning_modules.detection), the
    reference boxes that output is relative to (`anchors`: FaceNet's anchors, YOLO's grid cells) and
    `postprocess` to the best boxes after NMS, which evaluation, `detect` and the exported model share."""

    def __init__(self, inference: InferenceSettings):
        super().__init__()
        self.normalize: nn.Module = nn.Identity()  # the task puts the dataset's Normalize here
        self.inference = inference

    def anchors(self, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
        """(A, 4) reference boxes x1, y1, x2, y2 of a height x width input."""
        raise NotImplementedError

    def postprocess(self, output: Any, height: int, width: int, score_threshold: float | None = None,
                    nms_iou: float | None = None, max_detections: int | None = None) -> Tensor:
        """(N, K, 5) detections x1, y1, x2, y2, score per image, best first, rows past the last all zeros."""
        raise NotImplementedError

    def inference_settings(self, score_threshold: float | None = None, nms_iou: float | None = None,
                           max_detections: int | None = None) -> InferenceSettings:
        """`self.inference` with the given values that are not None in place of its own."""
        overrides: dict[str, Any] = {k: v for k, v in dict(
            score_threshold=score_threshold, nms_iou=nms_iou, max_detections=max_detections).items() if v is not None}
        return replace(self.inference, **overrides)

    @torch.no_grad()
    def detect(self, images: Tensor, score_threshold: float | None = None, nms_iou: float | None = None,
               max_detections: int | None = None) -> list[Tensor]:
        """One (k, 5) tensor x1, y1, x2, y2, score per image (call in eval mode)."""
        padded = self.postprocess(self(images), images.shape[-2], images.shape[-1], score_threshold, nms_iou,
                                  max_detections)
        return [rows[rows[:, 4] > 0] for rows in padded]


class FaceDetector(Detector):
    """Images in [0, 1] (N x 3 x H x W) -> `DetectorOutput` over the anchors of `anchors(H, W)`."""

    def __init__(self, backbone: nn.Module, pyramid: nn.Module, classification_head: Head, regression_head: Head,
                 anchor_grid: AnchorGrid, box_coder: BoxCoder, classifier: str, num_classes: int,
                 loss: LossSettings, inference: InferenceSettings):
        super().__init__(inference)
        self.backbone, self.pyramid = backbone, pyramid
        self.classification_head, self.regression_head = classification_head, regression_head
        self.anchor_grid, self.box_coder = anchor_grid, box_coder
        self.classifier, self.num_classes = classifier, num_classes
        self.loss = loss
        self.first_level = round(math.log2(anchor_grid.strides[0]))
        self._anchor_cache: dict[tuple[int, int, str], Tensor] = {}

    def forward(self, images: Tensor) -> DetectorOutput:
        features = self.backbone(self.normalize(images))[self.first_level - BACKBONE_LEVELS[0]:]
        levels = self.pyramid(features)
        return DetectorOutput(self.classification_head(levels), self.regression_head(levels))

    def anchors(self, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
        """(A, 4) anchors x1, y1, x2, y2 of a height x width input, cached per size and device."""
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():  # traced tensors must not be kept
            return self.anchor_grid.boxes(height, width, device)
        key = (int(height), int(width), str(device))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = self.anchor_grid.boxes(height, width, device)
        return self._anchor_cache[key]

    def face_scores(self, class_logits: Tensor) -> Tensor:
        """(N, A) probability of the likeliest foreground class (the face)."""
        logits = class_logits.float()
        if self.classifier == "sigmoid":
            return torch.sigmoid(logits).amax(dim=-1)
        return torch.softmax(logits, dim=-1)[..., 1:].amax(dim=-1)

    def postprocess(self, output: DetectorOutput, height: int, width: int, score_threshold: float | None = None,
                    nms_iou: float | None = None, max_detections: int | None = None) -> Tensor:
        """(N, K, 5) detections x1, y1, x2, y2, score per image, best first, rows past the last all zeros.

        The pre-NMS top-k keeps every shape static up to NMS, so the whole step traces with torch.export.
        """
        settings = self.inference_settings(score_threshold=score_threshold, nms_iou=nms_iou,
                                           max_detections=max_detections)
        scores = self.face_scores(output.class_logits)
        top_scores, index = scores.topk(min(settings.pre_nms_top_k, scores.shape[1]), dim=1)
        deltas = output.box_deltas.float().gather(1, index.unsqueeze(-1).expand(-1, -1, 4))
        boxes = self.box_coder.decode(deltas, self.anchors(height, width, scores.device)[index])
        limits = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
        boxes = torch.minimum(boxes.clamp(min=0), limits)
        return select_detections(boxes, top_scores, settings.score_threshold, settings.nms_iou,
                                 settings.max_detections)


def select_detections(boxes: Tensor, scores: Tensor, score_threshold: float, nms_iou: float,
                      max_detections: int) -> Tensor:
    """Greedy NMS of each image's (N, T, 4) candidates; the best `max_detections` above the threshold
    per image, padded with zero rows into (N, max_detections, 5).

    One NMS call for the batch: each image's boxes are shifted past the previous image's, so boxes of
    different images never overlap (torchvision's batched_nms trick, whose per-class loop for large
    inputs torch.export cannot trace). Candidates under the threshold can only suppress lower-scoring
    ones, so thresholding after NMS keeps exactly what thresholding before would.
    """
    from torchvision.ops import nms

    n, t = scores.shape
    image = torch.arange(n, device=scores.device).unsqueeze(1).expand(n, t).reshape(-1)
    flat_boxes, flat_scores = boxes.reshape(-1, 4), scores.reshape(-1)
    shift = (image.to(flat_boxes.dtype) * (flat_boxes.max() + 1)).unsqueeze(1)
    kept = nms(flat_boxes + shift, flat_scores, nms_iou)  # by decreasing score
    valid = flat_scores[kept] > score_threshold
    # each kept box's rank among its image's valid ones: sort stably by (image, invalid), count from the group start
    group = image[kept] * 2 + (~valid).long()
    group, order = torch.sort(group, stable=True)
    rank = torch.ones_like(group).cumsum(0) - 1 - torch.searchsorted(group, group)
    kept, valid = kept[order], valid[order]
    slot = torch.where(valid & (rank < max_detections), rank, torch.full_like(rank, max_detections))
    padded = boxes.new_zeros(n, max_detections + 1, 5)  # the last slot takes whatever is dropped
    padded[image[kept], slot] = torch.cat([flat_boxes[kept], flat_scores[kept].unsqueeze(1)], dim=1)
    return padded[:, :max_detections]


class DetectionExport(nn.Module):
    """The served model: N x 3 x S x S images in [0, 1] -> N x K x 5 detections (x1, y1, x2, y2, score in
    input pixels, best first; rows past an image's last detection are all zeros)."""

    def __init__(self, network: Detector, max_detections: int | None = None):
        super().__init__()
        self.network = network
        self.max_detections = max_detections or network.inference.max_detections

    def forward(self, images: Tensor) -> Tensor:
        return self.network.postprocess(self.network(images), images.shape[-2], images.shape[-1],
                                        max_detections=self.max_detections)


def build_face_detector(
        *, input_shape: tuple[int, ...], num_classes: int,
        backbone: Backbone = "resnet18", backbone_weights: str | None = None,
        pyramid: Literal["levels", "fpn"] = "levels",
        min_level: Annotated[int, Field(ge=2, le=5)] = 2, max_level: Annotated[int, Field(ge=5, le=7)] = 6,
        anchor_sizes_px: tuple[PositiveFloat, PositiveFloat] = (16.0, 256 * 2 ** (2 / 3)),
        scales_per_level: PositiveInt = 3, aspect_ratios: tuple[PositiveFloat, ...] = (1.0, 1.5),
        head_block: Literal["bottleneck", "conv"] = "bottleneck", head_blocks: NonNegativeInt = 4,
        regression_head_blocks: NonNegativeInt | None = None, head_channels: PositiveInt = 128,
        head_norm: Literal["group", "batch"] = "group",
        classifier: Literal["softmax", "sigmoid"] = "softmax", prior: Probability = 0.001,
        loss: Literal["cross_entropy", "focal"] = "cross_entropy",
        focal_alpha: UnitInterval | None = 0.25, focal_gamma: NonNegativeFloat = 2.0,
        positive_iou: UnitInterval = 0.5, negative_iou: UnitInterval = 0.5, match_best_anchor: bool = True,
        box_coder_weights: tuple[PositiveFloat, PositiveFloat, PositiveFloat, PositiveFloat] = (1.0, 1.0, 1.0, 1.0),
        smooth_l1_beta: NonNegativeFloat = 1.0,
        score_threshold: UnitInterval = 0.05, nms_iou: UnitInterval = 0.4, pre_nms_top_k: PositiveInt = 5000,
        max_detections: PositiveInt = 750) -> FaceDetector:
    """FaceNet v1.0: ResNet-18, levels conv2-conv6, anchors 16..406 px x w/h {1, 1.5}, bottleneck heads, softmax"""
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise StrideError(f"face detectors take 3-channel images (C, H, W); the data's input shape is "
                          f"{tuple(input_shape)}")
    if negative_iou > positive_iou:
        raise StrideError(f"model.negative_iou ({negative_iou}) must not exceed model.positive_iou ({positive_iou})")
    if anchor_sizes_px[0] > anchor_sizes_px[1]:
        raise StrideError(f"model.anchor_sizes_px must be (smallest, largest), got {tuple(anchor_sizes_px)}")
    if head_block == "bottleneck" and head_channels % 4:
        raise StrideError(f"model.head_channels must be a multiple of 4 for bottleneck blocks, got {head_channels}")
    levels = list(range(min_level, max_level + 1))
    in_channels = list(BACKBONE_CHANNELS[backbone][min_level - BACKBONE_LEVELS[0]:])
    anchor_grid = AnchorGrid(tuple(2 ** level for level in levels),
                             tuple(map(tuple, level_sizes(*anchor_sizes_px, len(levels), scales_per_level))),
                             tuple(aspect_ratios))
    classes = num_classes + (classifier == "softmax")
    head = lambda blocks, outputs, bias: Head(  # noqa: E731
        head_channels, blocks, head_block, head_norm, anchor_grid.per_location, outputs, bias)
    return FaceDetector(
        resnet_features(backbone, backbone_weights),
        Pyramid(in_channels, head_channels, max_level - BACKBONE_LEVELS[-1], top_down=pyramid == "fpn"),
        head(head_blocks, classes, prior_bias(classifier, num_classes, prior)),
        head(head_blocks if regression_head_blocks is None else regression_head_blocks, 4, [0.0] * 4),
        anchor_grid, BoxCoder(cast("tuple[float, float, float, float]", tuple(box_coder_weights))), classifier,
        num_classes,
        LossSettings(loss, positive_iou, negative_iou, match_best_anchor, focal_alpha, focal_gamma, smooth_l1_beta),
        InferenceSettings(score_threshold, nms_iou, pre_nms_top_k, max_detections))


def _register_variant(name: str, summary: str, **defaults: Any) -> None:
    """Register `build_face_detector` under `name` with other defaults (its signature is what the registry
    validates configs against, so each variant gets its own)."""
    signature = inspect.signature(build_face_detector)
    unknown = defaults.keys() - signature.parameters.keys()
    assert not unknown, f"{name}: no such hyper-parameters {unknown}"
    signature = signature.replace(parameters=[p.replace(default=defaults.get(p.name, p.default))
                                              for p in signature.parameters.values()])

    def build(**kwargs: Any) -> FaceDetector:
        bound = signature.bind(**kwargs)
        bound.apply_defaults()
        return build_face_detector(**bound.arguments)

    build.__signature__ = signature  # type: ignore[attr-defined]
    build.__annotations__ = build_face_detector.__annotations__
    build.__doc__ = summary
    register(name, task="detection")(build)


_register_variant("facenet_v1_0", inspect.getdoc(build_face_detector) or "")
_register_variant("facenet_v1_1", "FaceNet v1.1: FaceNet v1.0 with one logit and a sigmoid instead of the 2-way "
                  "softmax", classifier="sigmoid")
_register_variant("facenet_r50_fpn", "FaceNet (Swedish variant): ResNet-50 + FPN P3-P6, anchors 14..220 px, "
                  "RetinaNet conv heads, sigmoid, focal loss", backbone="resnet50", pyramid="fpn", min_level=3,
                  max_level=6, anchor_sizes_px=(14.0, 220.0), head_block="conv", head_blocks=3,
                  regression_head_blocks=2, head_channels=256, classifier="sigmoid", loss="focal")
