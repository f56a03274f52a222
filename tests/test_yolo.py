"""YOLO v1 as a detector of the detection task (docs/models.md, C, YOLO v1): the grid, box coding, eq. 3
of Redmon et al. 2016 on hand-built outputs (zero for a perfect prediction, the responsible predictor, the
lambdas), decoding to pixels, the exported model with NMS, a real overfit, and the real pipeline end to end."""

from __future__ import annotations

import json
import math
import re

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader

from stride.architectures import build, names, validate_params
from stride.architectures.face_detector import DetectionExport
from stride.architectures.yolo import (
    YoloDetector,
    YoloLossSettings,
    YoloOutput,
    cell_objects,
    decode_boxes,
    encode_boxes,
    grid_cells,
    responsible_predictors,
    yolo_loss,
)
from stride.config.schema import OptimConfig, ScheduleConfig
from stride.errors import StrideError
from stride.lightning_modules.detection import DetectionModule, detection_loss
from stride.serving.detection import DetectionServing
from stride.tasks import DataFacts

PAPER = YoloLossSettings(lambda_coord=5.0, lambda_noobj=0.5)
TINY = dict(head_convs=1, head_channels=16, hidden_features=32, dropout=0.0)  # seconds, not minutes, on a CPU
SIDE_PX = 64  # hand-built examples: a 2 x 2 grid of 32 px cells on a 64 px image
FACE = [8.0, 40.0, 24.0, 56.0]  # centre (16, 48): cell (row 1, column 0), index 2; codes (0.5, 0.5, 0.5, 0.5)


def tiny(size: int = SIDE_PX, **params) -> YoloDetector:
    torch.manual_seed(0)
    network = build("yolo_v1", input_shape=(3, size, size), num_classes=1, **{**TINY, **params})
    assert isinstance(network, YoloDetector)
    return network


def hand_built(grid_size: int = 2, boxes_per_cell: int = 2, classes: int = 1, images: int = 1) -> YoloOutput:
    """All-zero outputs to fill in: (N, S, S, B, 5) boxes and (N, S, S, C) class probabilities."""
    return YoloOutput(torch.zeros(images, grid_size, grid_size, boxes_per_cell, 5),
                      torch.zeros(images, grid_size, grid_size, classes))


def loss_of(output: YoloOutput, boxes: list[list[list[float]]], settings: YoloLossSettings = PAPER):
    targets = [{"boxes": torch.tensor(b).reshape(-1, 4)} for b in boxes]
    return yolo_loss(output, grid_cells(output.boxes.shape[1], SIDE_PX, SIDE_PX), targets, settings)


def iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# -- the registry and shapes -------------------------------------------------------------------------------------
def test_registered_with_the_papers_settings_and_refusing_grey_images():
    assert "yolo_v1" in names("detection")
    params = validate_params("yolo_v1", {})
    assert (params["grid_size"], params["boxes_per_cell"], params["lambda_coord"], params["lambda_noobj"]) == \
        (7, 2, 5.0, 0.5)
    assert (params["head_convs"], params["head_channels"], params["hidden_features"], params["dropout"]) == \
        (4, 1024, 4096, 0.5)  # sec. 2.2: four convs and two fully connected layers, dropout 0.5
    with pytest.raises(StrideError, match="model.backbone"):
        validate_params("yolo_v1", {"backbone": "vgg16"})
    with pytest.raises(StrideError, match="3-channel"):
        build("yolo_v1", input_shape=(1, 64, 64), num_classes=1)


@pytest.mark.parametrize("params, pytorch_parameters", [
    ({}, 251_944_027),  # the paper's head over ResNet-18: 205,520,896 weights in the first fully connected layer
    ({"head_convs": 1, "head_channels": 64, "hidden_features": 256}, 12_413_083)])  # faces-yolo-v1
def test_parameter_counts(params, pytorch_parameters):
    with torch.device("meta"):
        network = build("yolo_v1", input_shape=(3, 448, 448), num_classes=1, **params)
    assert sum(p.numel() for p in network.parameters()) == pytorch_parameters


@pytest.mark.parametrize("classes", [1, 3])
def test_outputs_are_a_grid_of_boxes_and_class_probabilities_for_any_input_size(classes):
    network = build("yolo_v1", input_shape=(3, 64, 64), num_classes=classes, grid_size=5, boxes_per_cell=3,
                    **TINY).eval()
    with torch.no_grad():
        output = network(torch.rand(2, 3, 67, 93))
    assert output.boxes.shape == (2, 5, 5, 3, 5)
    assert output.class_probabilities.shape == (2, 5, 5, classes)
    cells = network.anchors(67, 93)
    assert cells.shape == (25, 4)
    torch.testing.assert_close(cells[0], torch.tensor([0.0, 0.0, 93 / 5, 67 / 5]))
    torch.testing.assert_close(cells[6], torch.tensor([93 / 5, 67 / 5, 2 * 93 / 5, 2 * 67 / 5]))  # row 1, column 1
    torch.testing.assert_close(cells[-1, 2:], torch.tensor([93.0, 67.0]))


def test_box_codes_round_trip_through_the_cells():
    cells = grid_cells(2, SIDE_PX, SIDE_PX)
    faces = torch.tensor([FACE, [40.0, 2.0, 64.0, 30.0]])
    holding = cells[torch.tensor([2, 1])]
    codes = encode_boxes(faces, holding, grid_size=2)
    torch.testing.assert_close(codes[0], torch.tensor([0.5, 0.5, 0.5, 0.5]))  # 16 px of 64: sqrt(1/4)
    torch.testing.assert_close(codes[1], torch.tensor([0.625, 0.5, math.sqrt(24 / 64), math.sqrt(28 / 64)]))
    per_cell = torch.zeros(1, 4, 1, 4)
    per_cell[0, 2, 0], per_cell[0, 1, 0] = codes[0], codes[1]
    decoded = decode_boxes(per_cell, cells, grid_size=2)
    torch.testing.assert_close(decoded[0, 2, 0], faces[0])
    torch.testing.assert_close(decoded[0, 1, 0], faces[1])


# -- the loss, eq. 3 ---------------------------------------------------------------------------------------------
def perfect() -> YoloOutput:
    """FACE predicted exactly by predictor 0 of its cell with confidence 1 (its IoU), nothing elsewhere."""
    output = hand_built()
    output.boxes[0, 1, 0, 0] = torch.tensor([0.5, 0.5, 0.5, 0.5, 1.0])
    output.boxes[0, 1, 0, 1] = torch.tensor([0.5, 0.5, 0.25, 0.25, 0.0])  # a 4 px box: IoU 1/16
    output.boxes[0, 0, 1, :, :4] = 0.3  # coordinates of cells without an object cost nothing
    output.class_probabilities[0, 1, 0, 0] = 1.0
    output.class_probabilities[0, 0, 1, 0] = 0.7  # nor do their class probabilities
    return output


def test_a_perfect_prediction_costs_nothing():
    losses = loss_of(perfect(), [[FACE]])
    assert [float(v) for v in losses] == [0.0, 0.0, 0.0]


def test_the_responsible_predictor_and_every_term_by_hand():
    output = perfect()
    output.boxes[0, 1, 0, 0] = torch.tensor([0.5, 0.5, 0.25, 0.25, 0.3])  # 4 px box: IoU 0.0625
    output.boxes[0, 1, 0, 1] = torch.tensor([0.5, 0.5, 0.45, 0.45, 0.8])  # 12.96 px box inside FACE: IoU 0.6561
    output.boxes[0, 1, 1, 0, 4] = 0.4  # a confident predictor of an empty cell
    output.class_probabilities[0, 1, 0, 0] = 0.9
    losses = loss_of(output, [[FACE]])
    # predictor 1 is responsible: its coordinates (0.05 off in sqrt w and sqrt h) and its IoU are the targets;
    # predictor 0 and the empty cell's predictor pay lambda_noobj * C^2; the class probability 0.1 short
    coordinates = 5.0 * (0.05 ** 2 + 0.05 ** 2)
    confidence = (0.8 - 0.6561) ** 2 + 0.5 * (0.3 ** 2 + 0.4 ** 2)
    assert float(losses.regression) == pytest.approx(coordinates)
    assert float(losses.classification) == pytest.approx(confidence + 0.1 ** 2)
    assert float(losses.total) == pytest.approx(coordinates + confidence + 0.01)
    # the lambdas weigh exactly those terms
    plain = loss_of(output, [[FACE]], YoloLossSettings(lambda_coord=1.0, lambda_noobj=1.0))
    assert float(plain.regression) == pytest.approx(coordinates / 5)
    assert float(plain.classification) == pytest.approx((0.8 - 0.6561) ** 2 + 0.3 ** 2 + 0.4 ** 2 + 0.01)
    # a second image without faces adds its confidences' lambda_noobj terms; the sum is averaged over images
    two = hand_built(images=2)
    two.boxes[0], two.class_probabilities[0] = output.boxes[0], output.class_probabilities[0]
    two.boxes[1, 0, 0, 0, 4] = 0.2
    both = loss_of(two, [[FACE], []])
    assert float(both.total) == pytest.approx((float(losses.total) + 0.5 * 0.2 ** 2) / 2)


def test_without_overlap_the_nearest_predictor_is_responsible():
    cells = grid_cells(2, SIDE_PX, SIDE_PX)
    face = torch.tensor([FACE])
    codes = torch.tensor([[[0.0, 0.0, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]]])  # both sub-pixel boxes outside FACE
    predicted = decode_boxes(codes[None], cells[2:3], grid_size=2)[0]
    best, overlap = responsible_predictors(predicted, face, codes, encode_boxes(face, cells[2:3], 2))
    assert best.tolist() == [1] and overlap.tolist() == [0.0]
    codes[0, 0] = torch.tensor([0.5, 0.5, 0.3, 0.3])  # now predictor 0 overlaps it: IoU decides
    predicted = decode_boxes(codes[None], cells[2:3], grid_size=2)[0]
    assert responsible_predictors(predicted, face, codes, encode_boxes(face, cells[2:3], 2))[0].tolist() == [0]


def test_one_object_per_cell_the_largest():
    boxes = torch.tensor([[2.0, 2.0, 10.0, 10.0], [4.0, 4.0, 28.0, 28.0], [40.0, 40.0, 64.0, 64.0],
                          [60.0, 0.0, 64.0, 64.0]])  # 0 and 1 centre in cell 0; 2 and 3 in cell 3 (3 on its edge)
    cells, faces = cell_objects(boxes, grid_size=2, height=SIDE_PX, width=SIDE_PX)
    assert cells.tolist() == [0, 3] and faces.tolist() == [1, 2]  # the larger of each pair


# -- decoding, NMS and export ------------------------------------------------------------------------------------
def test_postprocess_gives_pixel_boxes_scored_by_confidence_times_class_probability():
    network = tiny(grid_size=2)
    output = hand_built()
    output.boxes[0, 0, 1, 0] = torch.tensor([0.25, 0.5, 0.5, 0.5, 0.9])  # centre (40, 16), 16 px: [32, 8, 48, 24]
    output.boxes[0, 0, 1, 1] = torch.tensor([0.3, 0.5, 0.5, 0.5, 0.5])  # the same face 1.6 px right: suppressed
    output.class_probabilities[0, 0, 1, 0] = 0.8
    output.boxes[0, 1, 0, 0] = torch.tensor([0.5, 0.5, 0.5, 0.5, 1.3])  # linear outputs past 1 are clamped
    output.class_probabilities[0, 1, 0, 0] = 1.2
    output.boxes[0, 1, 1, 0] = torch.tensor([1.0, 1.0, 0.5, 0.5, 0.6])  # [56, 56, 72, 72] clipped to the image
    output.class_probabilities[0, 1, 1, 0] = 1.0
    output.boxes[0, 0, 0, :, 4] = -0.4  # negative confidence: score 0, never a detection
    rows = network.postprocess(output, SIDE_PX, SIDE_PX, score_threshold=0.05, nms_iou=0.4, max_detections=5)
    torch.testing.assert_close(rows[0], torch.tensor([[8.0, 40.0, 24.0, 56.0, 1.0], [32.0, 8.0, 48.0, 24.0, 0.72],
                                                      [56.0, 56.0, 64.0, 64.0, 0.6], [0.0] * 5, [0.0] * 5]))


def test_exported_model_returns_the_standard_rows_and_traces_with_a_dynamic_batch():
    network = tiny(score_threshold=0.0)
    module = DetectionModule(network, OptimConfig(), ScheduleConfig())
    exported = DetectionServing().export(module, DataFacts("detection", (3, SIDE_PX, SIDE_PX), 1))
    assert exported.outputs.shape == (750, 5) and isinstance(exported.network, DetectionExport)
    small = DetectionExport(network.eval(), max_detections=7)
    images = torch.rand(2, 3, SIDE_PX, SIDE_PX)
    with torch.no_grad():
        rows = small(images)
        assert rows.shape == (2, 7, 5)
        assert torch.all(rows[..., 4][:, :-1] >= rows[..., 4][:, 1:])  # best first
        assert torch.all((rows[..., :4] >= 0) & (rows[..., :4] <= SIDE_PX))
        program = torch.export.export(small, (images,), dynamic_shapes=[{0: torch.export.Dim.AUTO}])
        three = torch.rand(3, 3, SIDE_PX, SIDE_PX)
        torch.testing.assert_close(program.module()(three), small(three))


# -- training ----------------------------------------------------------------------------------------------------
def face_batch() -> tuple[torch.Tensor, list[dict]]:
    """Dim noise with one bright, textured box, the only 'face' (FACE), twice."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, SIDE_PX, SIDE_PX, generator=generator) * 0.2
    x1, y1, x2, y2 = map(int, FACE)
    image[:, y1:y2, x1:x2] = 0.8 + 0.2 * torch.rand(3, y2 - y1, x2 - x1, generator=generator)
    target = {"boxes": torch.tensor([FACE]), "scale": 0.5, "key": "synthetic",
              "annotation": {"file": "0--Parade/synthetic.jpg", "boxes": [[16, 80, 32, 32]]}}
    return torch.stack([image, image]), [target, target]


def test_training_overfits_one_image_and_the_module_finds_its_face():
    # BatchNorm frozen at its initial statistics, as detectors are fine-tuned (torchvision's FrozenBatchNorm2d):
    # a few fast steps otherwise leave the running statistics behind the weights, and the fully connected head
    # magnifies the difference at evaluation
    network = tiny(grid_size=2).eval()
    for layer in network.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.momentum = 0.0
    images, targets = face_batch()
    cells = network.anchors(SIDE_PX, SIDE_PX)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    losses = []
    for _ in range(50):
        loss = detection_loss(network(images), cells, targets, network).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.1 * losses[0], losses
    found = network.detect(images[:1], score_threshold=0.2)[0]
    assert len(found) >= 1 and iou(found[0, :4].tolist(), FACE) > 0.5, found[:3]

    module = DetectionModule(network, OptimConfig(name="adamw", lr=1e-6), ScheduleConfig())
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    batches = DataLoader([(images[0], targets[0])] * 2, batch_size=2,
                         collate_fn=lambda pairs: (torch.stack([p[0] for p in pairs]), [p[1] for p in pairs]))
    trainer.fit(module, train_dataloaders=batches, val_dataloaders=batches)
    assert {"train_loss", "val_loss", "val_box_loss", "val_classification_loss", "val_ap"} <= \
        trainer.callback_metrics.keys()
    tested = trainer.test(module, batches, verbose=False)[0]
    assert tested["test_ap"] > 0.9, tested
    found, _ = module.last_test_predictions[0]
    assert iou(found[0, :4].tolist(), [v / 0.5 for v in FACE]) > 0.5  # original pixels: / scale


# -- end to end --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_yolo_recipe_trains_and_its_logged_model_evaluates_and_predicts(tmp_path, mlflow_server, capsys):
    from stride.datamodules.sources.faces import astronaut_face
    from stride.pipelines.cli import main

    shards = tmp_path / "faces"
    assert main(["data", "prepare", "faces", "--out", str(shards), "--val-size", "8"]) == 0
    assert main(["train", "faces-yolo-v1", "--tracking-uri", mlflow_server, "--set", f"data.path={shards}",
                 "data.image_size=64", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
                 "trainer.enable_progress_bar=false", f"trainer.checkpoint_dir={tmp_path / 'ckpt'}",
                 "tracking.experiment=yolo-e2e"]) == 0
    out = capsys.readouterr().out
    model = re.search(r"model: (models:/\S+)", out).group(1)
    assert re.search(r"run \w{32}: test_ap=", out)
    assert main(["evaluate", "--model", model, "--data", str(shards), "--tracking-uri", mlflow_server]) == 0
    out = capsys.readouterr().out
    for subset in ("test_ap", "test_ap_easy", "test_ap_medium", "test_ap_hard"):
        assert 0.0 <= float(re.search(rf"{subset}\s*: ([0-9.]+)", out).group(1)) <= 1.0
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(astronaut_face()[0]).save(photo)
    assert main(["predict", "--model", model, str(photo), "--tracking-uri", mlflow_server, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["predictions"][0]
    assert found["file"] == str(photo) and all(len(face["box"]) == 4 for face in found["faces"])
