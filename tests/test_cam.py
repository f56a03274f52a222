"""Class activation maps (docs/explain.md): the head finder, the maps, the boxes, `stride explain` and the
grid a training run logs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from test_registry_support import stride
from torch import nn

from stride.architectures import build
from stride.architectures.heads import find_cam_head
from stride.cam_plots import overlay
from stride.errors import StrideError
from stride.tasks.cam import class_maps, explain, scores_and_maps, threshold_boxes


def _digits(architecture: str, size: int = 28) -> nn.Module:
    return nn.Sequential(build(architecture, input_shape=(1, size, size), num_classes=10, channels=8)
                         if architecture == "digits_cnn" else
                         build(architecture, input_shape=(1, size, size), num_classes=10)).eval()


class FunctionalTail(nn.Module):
    """torchvision DenseNet's form: `features`, then relu, pooling and flatten as calls, then `classifier`
    (and a functional dropout whose `self.training` flag is read while tracing)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.MaxPool2d(2))
        self.classifier = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(F.relu(self.features(x)), (1, 1))
        return self.classifier(F.dropout(torch.flatten(pooled, 1), 0.5, self.training))


def _resnet18() -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor], nn.Linear]:
    network = torchvision.models.resnet18(weights=None, num_classes=10)
    return network, nn.Sequential(*list(network.children())[:-2]), network.fc  # conv1 ... layer4


def _sequential_tail() -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor], nn.Linear]:
    """The CIFAR networks' form: features -> AdaptiveAvgPool2d(1) -> Flatten -> (Dropout) -> Linear."""
    network = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5),
                            nn.Linear(5, 3))
    return network, network[:2], network[-1]


def _functional_tail() -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor], nn.Linear]:
    network = FunctionalTail()
    return network, lambda inputs: F.relu(network.features(inputs)), network.classifier


@pytest.mark.parametrize("make", [_resnet18, _sequential_tail, _functional_tail])
def test_cam_is_the_1x1_conv_sharing_the_linear_weights(make):
    """Eq. 5.3: GAP + linear == GAP of the maps of a 1x1 conv with the linear layer's weights and bias."""
    torch.manual_seed(0)
    network, features_of, linear = make()
    head = find_cam_head(network)  # in training mode: the head is traced as in evaluation all the same
    network.eval()
    inputs = torch.rand(2, 3, 32, 32)
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None, None])
        conv.bias.copy_(linear.bias)
        logits, expected = network(inputs), conv(features_of(inputs))
        maps = class_maps(head, inputs)
    assert head.form == "gap-linear"
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(maps.mean((2, 3)), logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(scores_and_maps(head, inputs)[0], logits.softmax(1), atol=1e-6, rtol=0)


def test_class_conv_forms():
    """NiN's form: a conv to the classes, then GAP. A 1x1 class conv's maps are its output (with a
    nonlinearity after it too); the digits CNN's 3x3 class conv is spread over its 3 x 3 input."""
    torch.manual_seed(0)
    inputs = torch.rand(3, 1, 28, 28)
    body = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU())
    for tail, form in (([], "class-conv"), ([nn.ReLU()], "class-maps")):
        network = nn.Sequential(body, nn.Conv2d(4, 10, 1), *tail, nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
        with torch.no_grad():
            head, class_map = find_cam_head(network), network[:-2](inputs)
            torch.testing.assert_close(class_maps(head, inputs), class_map, atol=1e-6, rtol=0)
        assert head.form == form
    digits = _digits("digits_cnn")
    with torch.no_grad():
        head = find_cam_head(digits)
        maps = class_maps(head, inputs)
        torch.testing.assert_close(maps.mean((2, 3)), digits(inputs), atol=1e-5, rtol=1e-5)
    assert head.form == "class-conv" and maps.shape == (3, 10, 3, 3)  # not the 1 x 1 map the conv outputs
    seen = explain(head, inputs, top_k=2)
    assert seen.maps.shape == (3, 2, 28, 28) and seen.maps.amax((2, 3)).eq(1).all() and seen.maps.min() >= 0
    assert (seen.classes[:, 0] == digits(inputs).argmax(1)).all()


def test_networks_without_such_a_head_are_refused_with_the_reason():
    with pytest.raises(StrideError, match=r"no class activation maps.*last linear layer `0\.17` reads BatchNorm1d "
                                          r"`0\.16`, not a global average pool.*GAP \+ linear"):
        find_cam_head(_digits("digits_ffn"))
    pooled_2x2 = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5))
    with pytest.raises(StrideError, match=r"reads AdaptiveAvgPool2d `1`, not a global average pool"):
        find_cam_head(pooled_2x2)
    partly_pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)).eval()
    with pytest.raises(StrideError, match=r"classifier takes 16 channels .*average pool that does not cover"):
        class_maps(find_cam_head(partly_pooled), torch.rand(1, 3, 6, 6))


def test_box_is_the_smallest_around_the_pixels_above_the_threshold():
    cam = torch.zeros(6, 8)
    cam[1, 2], cam[3, 5], cam[4, 3] = 1.0, 0.6, 0.3  # normalised already: min 0, max 1
    assert threshold_boxes(cam, 0.5).tolist() == [2, 1, 5, 3]  # x0, y0, x1, y1 around (2,1) and (5,3)
    assert threshold_boxes(cam, 0.2).tolist() == [2, 1, 5, 4]
    assert threshold_boxes(cam, 1.0).tolist() == [2, 1, 2, 1]
    batch = torch.stack([cam, torch.ones(6, 8)])[None]  # 1 x 2 x H x W; a flat map boxes everything
    assert threshold_boxes(batch, 0.5).tolist() == [[[2, 1, 5, 3], [0, 0, 7, 5]]]
    with pytest.raises(StrideError, match=r"threshold 0 must be in \(0, 1\]"):
        threshold_boxes(cam, 0)


def test_overlays_of_grey_and_colour_images_stay_in_range():
    grey, colour, cam = torch.rand(1, 5, 7).numpy(), torch.rand(3, 5, 7).numpy(), torch.rand(5, 7).numpy()
    for image in (grey, colour):
        blended = overlay(image, cam)
        assert blended.shape == (5, 7, 3) and 0 <= blended.min() and blended.max() <= 1
    assert (overlay(grey, None) == grey[0][..., None]).all()


# -- end to end: one 1-epoch training of digits_cnn, recorded in a local MLflow store ----------------------
@pytest.fixture(scope="module")
def trained(digits_shards: Path, tmp_path_factory: pytest.TempPathFactory):
    from stride.config import load_config
    from stride.pipelines.train import train_and_record
    from stride.tracking.store import resolve_tracking_uri

    tmp = tmp_path_factory.mktemp("cam")
    config = load_config("digits-cnn", [f"data.path={digits_shards}", "model.channels=8", "trainer.max_epochs=1",
                                        "data.batch_size=128", f"trainer.checkpoint_dir={tmp / 'checkpoints'}",
                                        "trainer.enable_progress_bar=false", "tracking.experiment=cam"])
    return train_and_record(config, tracking_uri=resolve_tracking_uri(workdir=tmp))


@pytest.fixture(scope="module")
def digit_files(trained, digits_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two test digits, one under a name to sanitise, one sharing its stem from another folder."""
    from stride.registry import write_sample_images

    folder = tmp_path_factory.mktemp("cam-files")
    (first, _), (second, _) = write_sample_images(digits_shards, folder / "samples", 2)
    odd, twin = folder / "my digit (1).png", folder / "twin" / "my digit (1).png"
    twin.parent.mkdir()
    shutil.copy(first, odd)
    shutil.copy(second, twin)
    return [odd, twin]


def test_training_logs_a_cam_grid_and_the_weights_to_rebuild_the_network(trained):
    client = mlflow.MlflowClient(trained.tracking_uri)
    artifacts = {a.path for folder in ("plots", "weights") for a in client.list_artifacts(trained.run_id, folder)}
    assert {"plots/class_activation_maps_test.png", "weights/module.pt"} <= artifacts
    grid = Path(client.download_artifacts(trained.run_id, "plots/class_activation_maps_test.png"))
    with Image.open(grid) as image:
        assert image.width > 600 and image.height > 150


def test_explain_a_checkpoint_writes_sanitised_pictures(trained, digit_files, tmp_path, capsys):
    code, out, err = stride(capsys, "explain", "--checkpoint", trained.outcome.best_checkpoint, *digit_files,
                            "--top-k", "2", "--out", tmp_path / "out", "--json")
    assert code == 0, err
    rows = json.loads(out)["explanations"]
    assert [Path(r["picture"]).name for r in rows] == ["my_digit_1_cam.png", "my_digit_1_cam-2.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["my_digit_1_cam-2.png", "my_digit_1_cam.png"]
    for row in rows:
        probabilities = [c["probability"] for c in row["top_k"]]
        assert len(probabilities) == 2 and probabilities == sorted(probabilities, reverse=True)
        for x0, y0, x1, y1 in (c["box"] for c in row["top_k"]):
            assert 0 <= x0 <= x1 < 28 and 0 <= y0 <= y1 < 28


def test_explain_a_logged_model_matches_its_checkpoint_and_predict(trained, digit_files, tmp_path, capsys):
    run_model = f"runs:/{trained.run_id}/model"
    from_checkpoint = stride(capsys, "explain", "--checkpoint", trained.outcome.best_checkpoint, *digit_files,
                             "--out", tmp_path / "a", "--json")
    from_model = stride(capsys, "explain", "--model", run_model, *digit_files, "--out", tmp_path / "b", "--json",
                        "--tracking-uri", trained.tracking_uri)
    predicted = stride(capsys, "predict", "--model", run_model, *digit_files, "--json",
                       "--tracking-uri", trained.tracking_uri)
    assert from_model[0] == 0, from_model[2]
    top = [[(c["class"], round(c["probability"], 5)) for c in r["top_k"]]
           for r in json.loads(from_model[1])["explanations"]]
    assert top == [[(c["class"], round(c["probability"], 5)) for c in r["top_k"]]
                   for r in json.loads(from_checkpoint[1])["explanations"]]
    assert [t[0][0] for t in top] == [r["class"] for r in json.loads(predicted[1])["predictions"]]


def test_explain_errors_name_the_reason(trained, digit_files, digits_shards, tmp_path, capsys, monkeypatch):
    from stride.config import load_config
    from stride.config.loading import config_to_dict
    from stride.tasks import get_task
    from stride.training.checkpoints import describe_checkpoint

    _, facts = describe_checkpoint(trained.outcome.best_checkpoint)
    config = load_config("digits-ffn", [f"data.path={digits_shards}"])
    module = get_task("classification").module(config, facts)
    ffn = tmp_path / "ffn.ckpt"  # a stride checkpoint as training writes it, untrained
    torch.save({"state_dict": module.state_dict(),
                "hyper_parameters": {"stride": {"config": config_to_dict(config), "data": facts.as_dict()}}}, ffn)
    code, _, err = stride(capsys, "explain", "--checkpoint", ffn, *digit_files, "--out", tmp_path)
    assert code == 2 and "architecture digits_ffn: no class activation maps" in err and "BatchNorm1d" in err

    monkeypatch.setattr("stride.tracking.contract.MODULE_ARTIFACT", "weights/absent.pt")  # a run from before explain
    code, _, err = stride(capsys, "explain", "--model", f"runs:/{trained.run_id}/model", *digit_files,
                          "--tracking-uri", trained.tracking_uri, "--out", tmp_path)
    assert code == 2 and f"its run {trained.run_id} has no weights/absent.pt artifact" in err
