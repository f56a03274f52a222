"""The face detectors (docs/models.md, A3): anchors, the prior, shapes, matching, losses, a real
overfit of one synthetic image, NMS and the exported model, parameter counts, backbone weights."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from stride.architectures import build, names, validate_params
from stride.architectures.face_detector import DetectionExport, FaceDetector, select_detections
from stride.config.schema import OptimConfig, ScheduleConfig
from stride.errors import StrideError
from stride.lightning_modules.detection import (
    IGNORED,
    NEGATIVE,
    DetectionModule,
    detection_loss,
    match_anchors,
    pack_images,
    unpack_images,
)

TINY = dict(head_channels=16, head_blocks=1)  # small heads: seconds, not minutes, on a CPU
IMAGE_PX = 48  # the synthetic image's side
FACE = [12.0, 8.0, 36.0, 40.0]  # its face, x1 y1 x2 y2 (24 x 32 px)


def tiny(name: str = "facenet_v1_0", size: int = 64, **params) -> FaceDetector:
    torch.manual_seed(0)
    return build(name, input_shape=(3, size, size), num_classes=1, **{**TINY, **params})


@functools.cache
def evaluated(name: str) -> FaceDetector:
    """A tiny network in eval mode, built once, for the tests that only read it."""
    return tiny(name).eval()


def with_settings(network: FaceDetector, **settings) -> FaceDetector:
    """The same weights with other loss or inference settings (a shallow copy)."""
    changed = copy.copy(network)
    for name, value in settings.items():
        setattr(changed, name, dataclasses.replace(getattr(network, name), **value))
    return changed


def parameters(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def face_image() -> tuple[torch.Tensor, dict]:
    """A small image: dim noise and one bright, textured box, the only 'face'."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, IMAGE_PX, IMAGE_PX, generator=generator) * 0.2
    x1, y1, x2, y2 = map(int, FACE)
    image[:, y1:y2, x1:x2] = 0.8 + 0.2 * torch.rand(3, y2 - y1, x2 - x1, generator=generator)
    target = {"boxes": torch.tensor([FACE]), "scale": 0.5, "key": "synthetic",
              "annotation": {"file": "0--Parade/synthetic.jpg", "boxes": [[24, 16, 48, 64]]}}
    return image, target


# -- the registry ------------------------------------------------------------------------------------------------
def test_three_registered_detectors_and_refused_hyper_parameters():
    assert {"facenet_r50_fpn", "facenet_v1_0", "facenet_v1_1"} <= set(names("detection"))  # YOLO v1 is there too
    assert validate_params("facenet_v1_1", {})["classifier"] == "sigmoid"
    fpn = validate_params("facenet_r50_fpn", {})
    assert (fpn["backbone"], fpn["pyramid"], fpn["min_level"], fpn["max_level"], fpn["loss"]) == \
        ("resnet50", "fpn", 3, 6, "focal")
    with pytest.raises(StrideError, match="model.classifier"):
        validate_params("facenet_v1_0", {"classifier": "softermax"})
    with pytest.raises(StrideError, match="model.max_level"):
        validate_params("facenet_v1_0", {"max_level": 4})
    with pytest.raises(StrideError, match="negative_iou"):
        tiny(negative_iou=0.6, positive_iou=0.5)
    with pytest.raises(StrideError, match="3-channel"):
        build("facenet_v1_0", input_shape=(1, 64, 64), num_classes=1)


@pytest.mark.parametrize("name, pytorch_parameters", [
    ("facenet_v1_0", 12_073_700), ("facenet_v1_1", 12_066_782), ("facenet_r50_fpn", 33_934_942)])
def test_parameter_counts(name, pytorch_parameters):
    with torch.device("meta"):
        network = build(name, input_shape=(3, 512, 512), num_classes=1)
    print(f"{name}: {parameters(network):,} parameters")
    assert parameters(network) == pytorch_parameters


# -- anchors and shapes ------------------------------------------------------------------------------------------
def test_facenet_v1_0_anchors_at_128_px():
    network = tiny(size=128)
    anchors = network.anchors(128, 128)
    assert network.anchor_grid.strides == (4, 8, 16, 32, 64)
    cells = [32 * 32, 16 * 16, 8 * 8, 4 * 4, 2 * 2]
    assert anchors.shape == (6 * sum(cells), 4)
    start = 0
    for level, count in enumerate(cells):
        level_anchors = anchors[start:start + 6 * count]
        start += 6 * count
        first_cell = level_anchors[:6]
        width, height = first_cell[:, 2] - first_cell[:, 0], first_cell[:, 3] - first_cell[:, 1]
        sizes = [16 * 2 ** level * 2 ** (i / 3) for i in range(3)]  # 16..256 x {1, 2^(1/3), 2^(2/3)}
        torch.testing.assert_close(torch.sqrt(width * height), torch.tensor(sizes).repeat_interleave(2))
        torch.testing.assert_close(width / height, torch.tensor([1.0, 1.5] * 3))  # w:h 1 : 2/3
        stride = 4 * 2 ** level
        centres = (level_anchors[:, :2] + level_anchors[:, 2:]) / 2
        assert torch.allclose(centres[0], torch.tensor([stride / 2, stride / 2]))
        assert torch.allclose(centres[6], torch.tensor([stride * 1.5, stride / 2]))  # next cell along the row
    largest = anchors[-6:]
    assert math.isclose(float(torch.sqrt((largest[-1, 2] - largest[-1, 0]) * (largest[-1, 3] - largest[-1, 1]))),
                        406.37, abs_tol=0.01)


@pytest.mark.parametrize("name, classes", [("facenet_v1_0", 2), ("facenet_v1_1", 1), ("facenet_r50_fpn", 1)])
def test_outputs_cover_every_anchor_of_odd_sizes(name, classes):
    network = evaluated(name)
    images = torch.rand(2, 3, 67, 93)
    output = network(images)
    anchors = network.anchors(67, 93)
    assert output.class_logits.shape == (2, anchors.shape[0], classes)
    assert output.box_deltas.shape == (2, anchors.shape[0], 4)
    assert network.anchors(67, 93) is anchors  # cached per size


@pytest.mark.parametrize("name", ["facenet_v1_0", "facenet_v1_1"])
def test_prior_sets_the_initial_face_probability(name):
    network = evaluated(name)
    bias = network.classification_head.predict.bias.detach()
    per_anchor = bias.view(network.anchor_grid.per_location, -1)
    if network.classifier == "softmax":
        assert torch.allclose(torch.softmax(per_anchor, dim=-1)[:, 1], torch.tensor(0.001))
    else:
        assert torch.allclose(torch.sigmoid(per_anchor), torch.tensor(0.001))
    with torch.no_grad():
        scores = network.face_scores(network(torch.rand(2, 3, 64, 64)).class_logits)
    assert 0.0008 < float(scores.mean()) < 0.0013


# -- matching and losses -----------------------------------------------------------------------------------------
def test_matching_of_hand_built_boxes():
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 20, 20], [100, 100, 110, 110], [200, 200, 210, 210],
                            [0, 0, 13, 10]], dtype=torch.float32)
    faces = torch.tensor([[0, 0, 10, 10], [96, 96, 112, 112]], dtype=torch.float32)
    # anchor 0: IoU 1 with face 0; anchor 1: 0.25; anchor 2: 100/256 with face 1, its best; anchor 4: 100/130
    assert match_anchors(anchors, faces, 0.5, 0.5, match_best_anchor=False).tolist() == \
        [0, NEGATIVE, NEGATIVE, NEGATIVE, 0]
    assert match_anchors(anchors, faces, 0.5, 0.5).tolist() == [0, NEGATIVE, 1, NEGATIVE, 0]
    assert match_anchors(anchors, faces, 0.5, 0.2, match_best_anchor=False).tolist() == \
        [0, IGNORED, IGNORED, NEGATIVE, 0]
    assert match_anchors(anchors, faces[:0], 0.5, 0.5).tolist() == [NEGATIVE] * 5


@pytest.mark.parametrize("name, loss", [("facenet_v1_0", "cross_entropy"), ("facenet_v1_1", "cross_entropy"),
                                        ("facenet_v1_0", "focal"), ("facenet_v1_1", "focal")])
def test_losses_are_finite_and_images_without_faces_are_all_background(name, loss):
    network = with_settings(evaluated(name), loss={"loss": loss})
    image, target = face_image()
    images = torch.stack([image, image])
    with torch.no_grad():
        output = network(images)
    anchors = network.anchors(IMAGE_PX, IMAGE_PX)
    losses = detection_loss(output, anchors, [target, {"boxes": torch.zeros(0, 4)}], network)
    assert all(torch.isfinite(v) for v in losses) and float(losses.regression) > 0
    empty = detection_loss(output, anchors, [{"boxes": torch.zeros(0, 4)}] * 2, network)
    assert float(empty.regression) == 0.0
    if loss == "cross_entropy":  # every anchor background with p(face) ~ 0.001: -log(0.999) each
        assert math.isclose(float(empty.classification), -math.log(1 - 0.001), rel_tol=0.3)


@pytest.fixture(scope="module")
def overfitted() -> tuple[FaceDetector, list[float]]:
    """facenet_v1_0 after 30 Adam steps on the synthetic image, and the loss of each step."""
    network = tiny("facenet_v1_0")
    image, target = face_image()
    anchors = network.anchors(IMAGE_PX, IMAGE_PX)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3, fused=True)  # fused: 5x faster on a CPU
    losses = []
    for _ in range(30):
        loss = detection_loss(network(image.unsqueeze(0)), anchors, [target], network).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return network.eval(), losses


def test_training_overfits_one_image_and_detect_finds_its_face(overfitted):
    network, losses = overfitted
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.3 * losses[0], losses
    found = network.detect(face_image()[0].unsqueeze(0), score_threshold=0.3)[0]
    assert len(found) >= 1 and iou(found[0, :4].tolist(), FACE) > 0.5, found[:3]


# -- post-processing and export ----------------------------------------------------------------------------------
def test_select_detections_suppresses_thresholds_and_pads():
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10]],
                          [[0, 0, 10, 10], [30, 30, 40, 40], [60, 60, 70, 70], [1, 1, 9, 9]]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.01], [0.95, 0.5, 0.02, 0.4]])
    out = select_detections(boxes, scores, score_threshold=0.05, nms_iou=0.5, max_detections=3)
    assert out.shape == (2, 3, 5)
    # image 0: box 1 overlaps box 0 (IoU 0.82) and goes; box 3 is under the threshold
    torch.testing.assert_close(out[0], torch.tensor([[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.7], [0] * 5]))
    # image 1: box 3 (IoU 0.64 with box 0) goes, box 2 is under the threshold; the same box in image 0 is no rival
    torch.testing.assert_close(out[1], torch.tensor([[0, 0, 10, 10, 0.95], [30, 30, 40, 40, 0.5], [0] * 5]))
    assert select_detections(boxes, scores, 0.05, 0.5, max_detections=1)[:, 0, 4].tolist() == \
        pytest.approx([0.9, 0.95])


def test_export_has_a_fixed_shape_and_traces_with_a_dynamic_batch():
    # two levels (conv5 and the extra conv6) trace in half the time of five and still cover both kinds
    network = tiny("facenet_v1_1", min_level=5, max_level=6, score_threshold=0.0).eval()
    export = DetectionExport(network, max_detections=7)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = export(images)
        assert out.shape == (2, 7, 5)
        assert torch.all(out[..., 4][:, :-1] >= out[..., 4][:, 1:])  # best first
        program = torch.export.export(export, (images,), dynamic_shapes=[{0: torch.export.Dim.AUTO}])
        three = torch.rand(3, 3, 64, 64)
        torch.testing.assert_close(program.module()(three), export(three))
    assert not network._anchor_cache or all(not isinstance(v, torch._subclasses.FakeTensor)
                                            for v in network._anchor_cache.values())
    sparse = DetectionExport(with_settings(network, inference={"score_threshold": 0.9999}), max_detections=5)
    with torch.no_grad():
        assert torch.count_nonzero(sparse(images)) == 0  # no score passes: all padding


# -- backbone weights --------------------------------------------------------------------------------------------
def test_backbone_weights_load_from_a_local_torchvision_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(1)
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pt"
    torch.save(resnet.state_dict(), path)
    network = tiny(backbone_weights=str(path))
    torch.testing.assert_close(network.backbone.layer3[0].conv1.weight, resnet.layer3[0].conv1.weight)
    torch.testing.assert_close(network.backbone.bn1.running_var, resnet.bn1.running_var)

    with pytest.raises(StrideError, match=r"missing\.pt is not a file"):
        tiny(backbone_weights=str(tmp_path / "missing.pt"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(StrideError, match="garbage.pt"):
        tiny(backbone_weights=str(garbage))
    renamed = {("layer9" + k[6:] if k.startswith("layer4") else k): v for k, v in resnet.state_dict().items()}
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(StrideError, match=r"renamed\.pt is not a torchvision resnet18 state dict: missing layer4"):
        tiny(backbone_weights=str(tmp_path / "renamed.pt"))
    reshaped = {**resnet.state_dict(), "conv1.weight": torch.zeros(64, 1, 7, 7)}
    torch.save(reshaped, tmp_path / "reshaped.pt")
    with pytest.raises(StrideError, match=r"wrong shapes conv1\.weight"):
        tiny(backbone_weights=str(tmp_path / "reshaped.pt"))


# -- the LightningModule -----------------------------------------------------------------------------------------
def test_packed_images_survive_the_gather_of_two_ranks():
    rank0 = ([np.array([[1, 2, 3, 4, 0.9]], np.float32), np.zeros((0, 5), np.float32)],
             [np.array([[1, 2, 3, 4]], np.float32), np.array([[5, 6, 7, 8], [1, 1, 2, 2]], np.float32)])
    rank1 = ([np.zeros((0, 5), np.float32)], [np.zeros((0, 4), np.float32)])
    predictions, ground_truth, kept = [], [], []
    keeps = ([np.array([True]), np.array([False, True])], [np.zeros(0, bool)])
    for (found, faces), keep in zip((rank0, rank1), keeps):
        p, g, k = unpack_images(pack_images(found, faces, keep), len(found))
        predictions += p
        ground_truth += g
        kept += k
    assert [k.tolist() for k in kept] == [[True], [False, True], []]
    assert len(predictions) == len(ground_truth) == 3
    for got, want in zip(predictions + ground_truth, rank0[0] + rank1[0] + rank0[1] + rank1[1]):
        np.testing.assert_array_equal(got, want)


class StepLosses(pl.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _batches(images: int) -> DataLoader:
    image, target = face_image()
    return DataLoader([(image, target)] * images, batch_size=2,
                      collate_fn=lambda batch: (torch.stack([b[0] for b in batch]), [b[1] for b in batch]))


def test_module_trains_validates_and_tests_with_ap(overfitted):
    pytest.importorskip("stride.metrics.detection_ap")  # written alongside this module (issue 12)
    module = DetectionModule(copy.deepcopy(overfitted[0]).train(), OptimConfig(name="adamw", lr=1e-4), ScheduleConfig(),
                             description={"model": "facenet_v1_0"})
    step_losses = StepLosses()
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         check_val_every_n_epoch=4, callbacks=[step_losses], log_every_n_steps=2)
    trainer.fit(module, train_dataloaders=_batches(2), val_dataloaders=_batches(2))
    assert len(step_losses.losses) == 4 and all(math.isfinite(v) for v in step_losses.losses)
    metrics = trainer.callback_metrics
    # the step loss is logged on the logging steps only (every 2nd here)
    assert {"train_loss", "train_loss_step", "val_loss", "val_box_loss", "val_ap"} <= metrics.keys()
    assert metrics["val_ap"] > 0.9, metrics
    tested = trainer.test(module, _batches(3), verbose=False)[0]
    assert tested["test_samples"] == 3
    assert tested["test_ap"] > 0.9, tested
    assert len(module.last_test_predictions) == 3
    found, annotation = module.last_test_predictions[0]
    assert annotation["boxes"] == [[24, 16, 48, 64]]
    assert iou(found[0, :4].tolist(), [x / 0.5 for x in FACE]) > 0.5  # original pixels: / scale
    assert module.hparams["stride"] == {"model": "facenet_v1_0"}
