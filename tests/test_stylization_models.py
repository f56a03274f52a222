"""The pieces of fast style transfer against their equations (docs/stylization.md): the perceptual losses (eqs.
5.5-5.9), the frozen loss network and its weights file, the pastiche network of Table 5.1 with conditional
instance normalisation (eqs. 5.12-5.14), and the exported graph that takes any image size."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from torch import nn

from stride.architectures.stylization import ConditionalInstanceNorm, PasticheNetwork
from stride.errors import StrideError
from stride.lightning_modules.perceptual import (
    LossNetwork,
    LossNetworkSpec,
    PerceptualLoss,
    PerceptualWeights,
    content_loss,
    gram,
    layer_channels,
    layer_names,
    style_loss,
    total_variation,
)
from stride.serving.stylization import Blended, EveryStyle, style_weights


def test_gram_content_style_and_tv_follow_the_equations():
    torch.manual_seed(0)
    f = torch.rand(2, 3, 4, 5)
    g = gram(f)
    i, j = 1, 2
    assert g[0, i, j].item() == pytest.approx((f[0, i] * f[0, j]).sum().item() / 20, rel=1e-6)  # eq. 5.6
    other = torch.rand(2, 3, 4, 5)
    expected = ((f - other) ** 2).sum(dim=(1, 2, 3)) / (3 * 4 * 5)  # eq. 5.5, w = 1
    torch.testing.assert_close(content_loss({"a": f}, {"a": other}, {"a": 1.0}), expected)
    expected_style = 2.0 * ((g - gram(other)) ** 2).sum(dim=(1, 2)) / 9  # eq. 5.8, w = 2
    torch.testing.assert_close(style_loss({"a": g}, {"a": gram(other)}, {"a": 2.0}), expected_style)
    flat = torch.full((1, 3, 6, 6), 0.3)
    assert total_variation(flat).item() == 0
    stripes = flat.clone()
    stripes[..., ::2] = 0.8
    assert total_variation(stripes).item() == pytest.approx(0.25)  # every horizontal step is 0.5


def test_the_loss_network_is_frozen_named_and_kept_out_of_training_modes():
    spec = LossNetworkSpec("vgg19", None, seed=3, width=0.25)
    network = LossNetwork(spec, ["conv4_2", "conv1_1"])
    assert not any(p.requires_grad for p in network.parameters())
    network.train()
    assert not network.training
    found = network(torch.rand(1, 3, 32, 32))
    assert set(found) == {"conv1_1", "conv4_2"} and found["conv4_2"].shape[1] == layer_channels("vgg19", "conv4_2",
                                                                                                  0.25)
    again = LossNetwork(spec, ["conv4_2", "conv1_1"])  # the seed fixes the stand-in's filters in every process
    torch.testing.assert_close(again(torch.ones(1, 3, 16, 16))["conv4_2"], network(torch.ones(1, 3, 16, 16))["conv4_2"])
    assert layer_names("vgg16")[-1] == "conv5_3" and layer_names("vgg19")[-1] == "conv5_4"
    with pytest.raises(StrideError, match="conv6_1"):
        LossNetwork(LossNetworkSpec("vgg16"), ["conv6_1"])


def test_imagenet_weights_load_from_a_torchvision_state_dict_file_and_bad_files_are_named(tmp_path):
    full = torchvision.models.vgg16(weights=None).state_dict()
    kept = {k: v for k, v in full.items() if k.startswith(("features.0.", "features.2.", "features.5.", "features.7."))}
    kept["classifier.6.bias"] = full["classifier.6.bias"]  # a full file also holds the classifier: ignored
    good = tmp_path / "vgg16-cut.pth"
    torch.save(kept, good)
    network = LossNetwork(LossNetworkSpec("vgg16", str(good)), ["conv2_2"])
    torch.testing.assert_close(network.features[7].weight, full["features.7.weight"])
    assert network.weights_sha256 and "ImageNet weights from vgg16-cut.pth" in network.description()

    with pytest.raises(StrideError, match="no tensor .features.10.weight."):  # conv3_1 is not in the file
        LossNetwork(LossNetworkSpec("vgg16", str(good)), ["conv3_1"])
    wrong = tmp_path / "wrong.pth"
    torch.save({**kept, "features.2.weight": torch.zeros(64, 64, 5, 5)}, wrong)
    with pytest.raises(StrideError, match=r"features.2.weight has shape \[64, 64, 5, 5\]"):
        LossNetwork(LossNetworkSpec("vgg16", str(wrong)), ["conv2_2"])
    pickled = tmp_path / "object.pth"
    with open(pickled, "wb") as handle:
        pickle.dump(nn.Conv2d(3, 4, 3), handle)  # a pickled object, not a weights-only state dict
    with pytest.raises(StrideError, match="not a weights-only torch state dict"):
        LossNetwork(LossNetworkSpec("vgg16", str(pickled)), ["conv1_1"])
    with pytest.raises(StrideError, match="random filters only"):
        LossNetwork(LossNetworkSpec("vgg16", str(good), width=0.5), ["conv1_1"])
    with pytest.raises(StrideError, match="is not a file"):
        LossNetwork(LossNetworkSpec("vgg16", str(tmp_path / "missing.pth")), ["conv1_1"])


def test_conditional_instance_norm_is_instance_norm_per_style_and_blends_by_weighting_the_pairs():
    torch.manual_seed(0)
    norm = ConditionalInstanceNorm(4, styles=3)
    with torch.no_grad():
        norm.gamma.copy_(torch.rand(3, 4) + 0.5)
        norm.beta.copy_(torch.rand(3, 4))
    x = torch.randn(2, 4, 5, 6)
    plain = nn.InstanceNorm2d(4, affine=True)
    with torch.no_grad():
        plain.weight.copy_(norm.gamma[1])
        plain.bias.copy_(norm.beta[1])
    one_hot = torch.tensor([[0.0, 1.0, 0.0]]).expand(2, -1)
    torch.testing.assert_close(norm(x, one_hot), plain(x))  # eq. 5.13 with style 1
    blend = torch.tensor([[0.25, 0.0, 0.75]]).expand(2, -1)
    with torch.no_grad():
        plain.weight.copy_(0.25 * norm.gamma[0] + 0.75 * norm.gamma[2])
        plain.bias.copy_(0.25 * norm.beta[0] + 0.75 * norm.beta[2])
    torch.testing.assert_close(norm(x, blend), plain(x))  # eq. 5.14


def test_the_pastiche_network_has_table_5_1s_shape_and_stylises_any_size():
    network = PasticheNetwork(styles=2, width=16).eval()
    convs = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs][:3] == [9, 3, 3] and convs[-1].kernel_size == (9, 9)
    assert [c.out_channels for c in convs][:3] == [16, 32, 64] and len(convs) == 3 + 10 + 2 + 1
    assert [c.stride[0] for c in convs][:3] == [1, 2, 2]
    with torch.no_grad():
        for size in ((32, 32), (37, 53), (5, 7)):
            out = network(torch.rand(1, 3, *size), torch.tensor([[1.0, 0.0]]))
            assert out.shape == (1, 3, *size)


def test_the_exported_graph_takes_any_size_and_returns_every_style():
    network = PasticheNetwork(styles=2, width=8).eval()
    served = EveryStyle(network, 2).eval()
    dims = torch.export.Dim.AUTO
    program = torch.export.export(served, (torch.rand(2, 3, 32, 32),), dynamic_shapes=[{0: dims, 2: dims, 3: dims}])
    image = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        exported = program.module()(image)
        assert exported.shape == (1, 2, 3, 37, 53)
        torch.testing.assert_close(exported, served(image))
        torch.testing.assert_close(exported[:, 1], network(image, torch.tensor([[0.0, 1.0]])).clamp(0, 1))
        blended = Blended(network, [1.0, 3.0])(image)
        torch.testing.assert_close(blended[:, 0], network(image, torch.tensor([[0.25, 0.75]])).clamp(0, 1))


def test_style_choices_name_index_or_weights():
    names = ["brick", "stain"]
    assert style_weights("stain", names) == [0.0, 1.0]
    assert style_weights("0", names) == [1.0, 0.0]
    assert style_weights("0.7, 0.3", names) == [0.7, 0.3]
    for bad in ("cubism", "1,2,3", "-1,2", "0,0", "nan,1"):
        with pytest.raises(StrideError, match="--style"):
            style_weights(bad, names)


def test_the_perceptual_loss_blends_style_targets_by_the_mixture():
    weights = PerceptualWeights({"conv1_2": 1.0}, {"conv1_2": 1.0, "conv2_1": 1.0}, 1.0, 10.0, 0.5)
    loss = PerceptualLoss(LossNetwork(LossNetworkSpec("vgg16", None, 0, 0.25), weights.layers), weights)
    styles = [torch.rand(3, 20, 24), torch.zeros(3, 16, 16) + 0.5]
    targets = loss.style_targets(styles)
    assert targets["conv2_1"].shape == (2, 32, 32)
    image = torch.rand(1, 3, 16, 16)
    _, first = loss(image, image, targets, torch.tensor([[1.0, 0.0]]))
    _, mixed = loss(image, image, targets, torch.tensor([[0.5, 0.5]]))
    assert first["content"].item() == 0 and first["style"].item() > 0
    assert mixed["style"].item() != first["style"].item()
