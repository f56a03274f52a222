"""`stride stylize`: iterative style transfer (stride.lightning_modules.iterative_stylization) and its command.

The optimisation runs on tiny images through a quarter-width random-filter VGG: the tests pin that it lowers
eq. 5.10, moves the image toward the style (style_ratio < 1), blends styles as weighted Gram targets and stays
in [0, 1]; the command's tests pin its checks (all before the first step), its files and its MLflow run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stride.errors import StrideError
from stride.lightning_modules import iterative_stylization
from stride.lightning_modules.iterative_stylization import (
    IterativeSettings,
    method_weights,
    style_mixture,
    stylize,
)
from stride.lightning_modules.perceptual import LossNetwork, LossNetworkSpec, PerceptualLoss
from stride.pipelines.cli import main

SIDE = 32


def smooth_content() -> torch.Tensor:
    """A smooth colour gradient: almost no texture for a style loss to find."""
    y, x = torch.meshgrid(torch.linspace(0, 1, SIDE), torch.linspace(0, 1, SIDE), indexing="ij")
    return torch.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.8 - 0.5 * x * y])


def textured_style(seed: int = 0) -> torch.Tensor:
    """Saturated coloured stripes with noise: texture and colours the content lacks."""
    generator = torch.Generator().manual_seed(seed)
    stripes = (torch.arange(SIDE) // 3 % 2).float()
    pattern = torch.stack([stripes[None, :].expand(SIDE, SIDE), stripes[:, None].expand(SIDE, SIDE),
                           1 - stripes[None, :].expand(SIDE, SIDE)])
    return (0.8 * pattern + 0.2 * torch.rand(3, SIDE, SIDE, generator=generator)).clamp(0, 1)


@pytest.fixture(scope="module")
def perceptual() -> PerceptualLoss:
    weights = method_weights(content_weight=1.0, style_weight=10.0)
    return PerceptualLoss(LossNetwork(LossNetworkSpec("vgg19", None, 0, 0.25), weights.layers), weights)


def test_adam_lowers_the_loss_and_moves_the_image_toward_the_style(perceptual):
    content = smooth_content()
    result = stylize(perceptual, content, [textured_style()], IterativeSettings(steps=20, lr=0.05))
    totals = [row["total"] for row in result.history]
    assert [row["step"] for row in result.history] == list(range(21))  # step 0: the initial image
    assert result.history[0]["content"] == 0  # it starts as the content image
    assert totals[-1] < 0.5 * totals[0]
    assert 0 < result.style_ratio < 1
    assert result.history[-1]["style"] == pytest.approx(result.style_ratio * result.content_style_loss)
    assert result.image.shape == content.shape
    assert result.image.min() >= 0 and result.image.max() <= 1


def test_lbfgs_lowers_the_loss_too(perceptual):
    result = stylize(perceptual, smooth_content(), [textured_style()], IterativeSettings(steps=5, optimizer="lbfgs"))
    assert result.history[-1]["total"] < 0.5 * result.history[0]["total"]
    assert result.style_ratio < 1
    assert result.image.min() >= 0 and result.image.max() <= 1


def test_noise_init_is_seeded_and_snapshots_come_at_the_interval(perceptual):
    settings = IterativeSettings(steps=7, init="noise", snapshot_every=3, seed=5)
    first = stylize(perceptual, smooth_content(), [textured_style()], settings)
    again = stylize(perceptual, smooth_content(), [textured_style()], settings)
    assert [step for step, _ in first.snapshots] == [3, 6]
    assert torch.equal(first.image, again.image)
    assert first.history[0]["content"] > 0  # noise is not the content image


def test_weights_one_and_zero_blend_to_the_first_style_alone(perceptual):
    content, style, other = smooth_content(), textured_style(0), textured_style(1).flip(0)
    targets = perceptual.style_targets([style, other])
    blended = {name: torch.einsum("ns,sij->nij", style_mixture([1, 0], 2), t) for name, t in targets.items()}
    alone = perceptual.style_targets([style])
    for name in alone:
        torch.testing.assert_close(blended[name], alone[name])
    settings = IterativeSettings(steps=3)
    mixed = stylize(perceptual, content, [style, other], settings, style_weights=[1.0, 0.0])
    single = stylize(perceptual, content, [style], settings)
    assert [row["total"] for row in mixed.history] == pytest.approx([row["total"] for row in single.history])
    torch.testing.assert_close(mixed.image, single.image)


def test_style_weights_are_scaled_to_sum_to_one_and_checked():
    torch.testing.assert_close(style_mixture([2, 1], 2), torch.tensor([[2 / 3, 1 / 3]]))
    torch.testing.assert_close(style_mixture(None, 4), torch.full((1, 4), 0.25))
    for weights, count, message in (([0.7, 0.3], 3, "2 style weights for 3 style image"),
                                    ([1.0, -0.5], 2, ">= 0"), ([0.0, 0.0], 2, "not all 0"),
                                    ([math.nan, 1.0], 2, "finite")):
        with pytest.raises(StrideError, match=message):
            style_mixture(weights, count)


@pytest.mark.parametrize("settings, message", [
    (dict(optimizer="sgd"), "optimizer 'sgd' is not known"), (dict(init="zeros"), "init 'zeros' is not known"),
    (dict(steps=0), "steps must be at least 1"), (dict(lr=-1.0), "lr must be")])
def test_settings_are_checked(settings, message):
    with pytest.raises(StrideError, match=message):
        IterativeSettings(**settings)


# -- the command ------------------------------------------------------------------------------------------------

TINY = ["--size", "32", "--steps", "3", "--no-track"]
FAST = [*TINY, "--loss-network-width", "0.25"]


def write_style_png(path: Path) -> Path:
    Image.fromarray((textured_style().permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
    return path


def test_a_run_without_tracking_writes_the_image_snapshots_and_figures(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["stylize", "--content", "chelsea", "--style", "brick", "--style", "stain", "--style-weights", "2,1",
                 "--out", str(out), *FAST, "--snapshot-every", "2"])
    assert code == 0
    with Image.open(out / "stylized.png") as image:
        assert image.size == (32, 21)  # chelsea is 451 x 300: the longer side is --size, the aspect kept
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "loss_curves.png", "snapshots", "stylized.png"]
    assert [p.name for p in (out / "snapshots").iterdir()] == ["step_00002.png"]
    assert f"stylized image: {out / 'stylized.png'}" in capsys.readouterr().out


@pytest.fixture
def no_optimisation(monkeypatch):
    """Fails a test whose command reaches the optimisation: every check comes before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the optimisation started")

    monkeypatch.setattr(iterative_stylization, "stylize", refuse)


def wrong_shapes_weights(path: Path) -> Path:
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, path)
    return path


@pytest.mark.parametrize("arguments, message", [
    (["--content", "no_such.png", "--style", "brick"], "'no_such.png' is neither a built-in content image"),
    (["--content", "moon", "--style", "brick"], "'moon' is neither a built-in content image (astronaut, chelsea"),
    (["--content", "astronaut", "--style", "velvet"], "'velvet' is neither a built-in style (brick"),
    (["--content", "astronaut", "--style", "brick", "--style-layers", "conv1_1,conv9_9"],
     "['conv9_9'] are not layers of vgg19"),
    (["--content", "astronaut", "--style", "brick", "--content-layers", "conv4_2:-1"], "not a finite number > 0"),
    (["--content", "astronaut", "--style", "brick", "--loss-network", "resnet50"], "loss network 'resnet50'"),
    (["--content", "astronaut", "--style", "brick", "--style", "grass", "--style-weights", "1"],
     "1 style weights for 2 style image"),
    (["--content", "astronaut", "--style", "brick", "--style", "grass", "--style-weights", "1,-1"], ">= 0"),
    (["--content", "astronaut", "--style", "brick", "--loss-weights", "WEIGHTS"],
     "features.0.weight has shape [8, 3, 3, 3]"),
    (["--content", "chelsea", "--style", "brick", "--size", "20"], "chelsea is 20 x 13 px at this --size; the loss "
     "layers (conv4_2, conv1_1, conv2_1, conv3_1, conv4_1, conv5_1) need at least 16 px on the shorter side"),
    (["--content", "STYLE_PNG", "--style", "brick", "--max-pixels", "100"], "raise --max-pixels if it is real"),
    (["--content", "astronaut", "--style", "STYLE_PNG", "--max-pixels", "100"], "raise --max-pixels if it is real"),
])
def test_bad_input_is_refused_before_any_optimisation(arguments, message, tmp_path, capsys, no_optimisation):
    files = {"WEIGHTS": str(wrong_shapes_weights(tmp_path / "vgg19.pth")),
             "STYLE_PNG": str(write_style_png(tmp_path / "style.png"))}
    arguments = [files.get(item, item) for item in arguments]
    code = main(["stylize", "--out", str(tmp_path / "out"), *(TINY if "--loss-weights" in arguments else FAST),
                 *arguments])  # ImageNet weights come at width 1 only
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_tracking_server_is_refused_before_any_optimisation(tmp_path, capsys, no_optimisation):
    code = main(["stylize", "--content", "astronaut", "--style", "brick", "--out", str(tmp_path / "out"),
                 "--size", "32", "--loss-network-width", "0.25", "--tracking-uri", "http://127.0.0.1:9"])
    assert code == 2
    assert "unreachable" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tracked_run_logs_the_steps_the_ratio_and_the_pictures(tmp_path, mlflow_server, capsys):
    from mlflow.tracking import MlflowClient

    style = write_style_png(tmp_path / "stripes.png")
    out = tmp_path / "out"
    code = main(["stylize", "--content", "astronaut", "--style", str(style), "--out", str(out), "--steps", "12",
                 "--size", "48", "--loss-network-width", "0.25", "--loss-network", "vgg16", "--snapshot-every", "5",
                 "--tracking-uri", mlflow_server])
    assert code == 0
    with Image.open(out / "stylized.png") as image:
        assert image.size == (48, 48)  # astronaut is square
    printed = capsys.readouterr().out
    assert f"MLflow: {mlflow_server}/#/experiments/" in printed
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("stylize").experiment_id])
    assert run.info.status == "FINISHED"
    for metric in ("loss", "content_loss", "style_loss", "tv_loss"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == list(range(13))
    assert run.data.metrics["style_ratio"] < 1
    params = run.data.params
    assert params["style.0"] == "stripes.png" and len(params["style.0.sha256"]) == 64
    assert params["loss.network"] == "vgg16 with fixed random filters (seed 0, width x0.25; no ImageNet weights)"
    assert params["steps"] == "12" and params["content_layers"] == "conv4_2"
    logged = {a.path for folder in ("", "snapshots", "plots")
              for a in client.list_artifacts(run.info.run_id, folder or None)}
    assert {"stylized.png", "snapshots/step_00005.png", "snapshots/step_00010.png", "plots/loss_curves.png",
            "plots/grid.png"} <= logged
