"""The seeds' classification networks (docs/models.md, B, C, D): parameter counts against the papers,
shapes on their test vectors, GoogLeNet's auxiliary outputs and loss, and refused hyper-parameters.

Large networks are built on the meta device: parameters get shapes but no memory, so counting
VGG-16's 138M parameters costs nothing.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stride.architectures import build, validate_params, weight_count
from stride.architectures.outputs import AuxiliaryLogits
from stride.errors import StrideError
from stride.lightning_modules.classification import classification_loss

CIFAR = (3, 32, 32)
MNIST = (1, 28, 28)
IMAGENET = (3, 224, 224)


def parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def on_meta(name: str, input_shape: tuple[int, ...] = CIFAR, num_classes: int = 10, **params) -> nn.Module:
    """The network on the meta device, built once per test session (tests only read it or switch its mode)."""
    return _meta_network(name, input_shape, num_classes, tuple(sorted(params.items(), key=str)))


@functools.cache
def _meta_network(name: str, input_shape: tuple[int, ...], num_classes: int, params: tuple) -> nn.Module:
    with torch.device("meta"):
        return build(name, input_shape=input_shape, num_classes=num_classes, **dict(params))


# -- the CUDA thesis (B) and the ImageNet networks whose counts are published to the parameter ------------------
@pytest.mark.parametrize("name, input_shape, num_classes, published", [
    ("mnist_lenet", MNIST, 10, 3_274_634),  # abstract and Table 3.2
    ("cifar_a", CIFAR, 10, 4_259_274),  # Table 3.3
    ("cifar_b", CIFAR, 10, 29_853_002),  # Table 3.4
    ("cifar_c", CIFAR, 10, 31_005_290),  # Table 3.5 sums to this; the thesis's text says 30,955,290
    ("alexnet", (3, 227, 227), 1000, 62_378_344),  # notes: "62.3 million", without grouping
    ("vgg16", IMAGENET, 1000, 138_357_544),
    # torchvision's documented counts for the notes' block counts
    ("resnet18", IMAGENET, 1000, 11_689_512),
    ("resnet34", IMAGENET, 1000, 21_797_672),
    ("resnet50", IMAGENET, 1000, 25_557_032),
    ("resnet101", IMAGENET, 1000, 44_549_160),
    ("resnet152", IMAGENET, 1000, 60_192_808),
    ("densenet121", IMAGENET, 1000, 7_978_856),
    ("densenet169", IMAGENET, 1000, 14_149_480),
    ("densenet201", IMAGENET, 1000, 20_013_928),
    ("densenet264", IMAGENET, 1000, 33_337_704),  # not in torchvision: its DenseNet class, blocks (6, 12, 64, 48)
])
def test_exact_parameter_counts(name, input_shape, num_classes, published):
    assert parameters(on_meta(name, input_shape, num_classes)) == published


# -- the dissertation (D): counts printed rounded (Tables 4.5, 4.6) -------------------------------------------------
def within_printed_digits(count: int, printed: str) -> bool:
    """True if `printed` (e.g. '272K', '1.7M') is `count` rounded or truncated to its last printed digit:
    Table 4.5 rounds most counts (466,714 -> 467K) but truncates some (868,634 -> 868K)."""
    number, suffix = printed[:-1], printed[-1]
    scale = {"K": 1e3, "M": 1e6}[suffix]
    unit = scale * 10 ** -(len(number.split(".")[1]) if "." in number else 0)
    value = float(number) * scale
    return value - unit / 2 <= count < value + unit


@pytest.mark.parametrize("name, input_shape, params, printed, exact", [
    ("mnist_baseline", MNIST, {}, "682K", 681_506),  # Table 4.1
    ("nin", MNIST, {"filters": "mnist"}, "358K", 358_218),  # Table 4.6
    ("nin", CIFAR, {"filters": "cifar"}, "1.6M", 1_559_122),
    ("nin", CIFAR, {"filters": "svhn"}, "2M", 1_986_026),
    ("nin", MNIST, {"filters": "mnist", "batch_norm": True}, "358K", 358_996),
    ("nin", CIFAR, {"filters": "cifar", "batch_norm": True}, "1.6M", 1_560_548),
    ("nin", CIFAR, {"filters": "svhn", "batch_norm": True}, "2M", 1_987_668),
    ("bn_vgg", CIFAR, {}, "15M", 14_987_210),
    ("preact_resnet", CIFAR, {"depth": 20}, "272K", 272_282),  # Table 4.5, projection shortcuts
    ("preact_resnet", CIFAR, {"depth": 32}, "467K", 466_714),
    ("preact_resnet", CIFAR, {"depth": 44}, "661K", 661_146),
    ("preact_resnet", CIFAR, {"depth": 56}, "856K", 855_578),
    ("preact_resnet", CIFAR, {"depth": 110}, "1.7M", 1_730_522),
    ("preact_resnet", CIFAR, {"depth": 65, "block": "bottleneck"}, "683K", 683_162),
    ("preact_resnet", CIFAR, {"depth": 83, "block": "bottleneck"}, "868K", 868_634),
    ("preact_resnet", CIFAR, {"depth": 164, "block": "bottleneck"}, "1.7M", 1_703_258),
    ("wide_resnet", CIFAR, {"depth": 40, "widen_factor": 4}, "8.9M", 8_949_210),
    ("wide_resnet", CIFAR, {"depth": 28, "widen_factor": 10}, "36.5M", 36_479_194),
    ("densenet", CIFAR, {"depth": 40, "growth_rate": 12}, "1M", 1_019_722),
])
def test_rounded_parameter_counts(name, input_shape, params, printed, exact):
    count = parameters(on_meta(name, input_shape, **params))
    assert count == exact
    assert within_printed_digits(count, printed)


def test_densenet_bc_is_huang_et_al_s_network():
    """Table 4.6 prints 768K, 0.15% under Huang et al.'s DenseNet-BC-(100,12) (0.8M in the seed's text);
    the same network without its final BN-ReLU would have 768,478."""
    network = on_meta("densenet", depth=100, growth_rate=12, bottleneck=True, compression=0.5)
    assert parameters(network) == 769_162
    assert abs(parameters(network) - 768_000) / 768_000 < 0.002
    assert parameters(network) - parameters(network.norm) == 768_478


def test_googlenet_counts_match_table_1():
    """The paper's Table 1 sums to 6,797.7K weights (its K is 1024), auxiliary heads excluded."""
    network = on_meta("googlenet", IMAGENET, 1000)
    main = [module for name, module in network.named_children() if not name.startswith("aux")]
    weights = sum(weight_count(module) for module in main)
    assert weights == 6_990_272 and sum(parameters(module) for module in main) == 6_998_552
    assert abs(weights / 1024 - 6797.7) / 6797.7 < 0.01


def test_imagenet_block_counts_follow_the_notes():
    stages = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3],
              "resnet101": [3, 4, 23, 3], "resnet152": [3, 8, 36, 3]}
    for name, blocks in stages.items():
        network = on_meta(name, IMAGENET, 1000)
        assert [len(getattr(network, f"layer{i}")) for i in range(1, 5)] == blocks
    dense = {"densenet121": [6, 12, 24, 16], "densenet264": [6, 12, 64, 48]}
    for name, blocks in dense.items():
        features = on_meta(name, IMAGENET, 1000).features
        assert [len(getattr(features, f"denseblock{i}")) for i in range(1, 5)] == blocks


# -- shapes on the seeds' test vectors -------------------------------------------------------------------------------
def test_cuda_thesis_test_vector():
    """[10,3,32,32] -> Conv32 5x5 s1 p2 -> [10,32,32,32] -> pool -> 8192 features (docs/models.md, B)."""
    network = build("cifar_a", input_shape=CIFAR, num_classes=10).eval()
    x = torch.rand(10, *CIFAR)
    conv, relu, pool = network[:3]
    assert (conv.kernel_size, conv.stride, conv.padding) == ((5, 5), (1, 1), (2, 2))
    assert conv(x).shape == (10, 32, 32, 32)
    assert pool(relu(conv(x))).flatten(1).shape == (10, 8192)
    assert network(x).shape == (10, 10)
    assert on_meta("mnist_lenet", MNIST)[-4].in_features == 3136  # Table 3.2: 64 x 7 x 7 into FC1024


def test_cuda_thesis_dropout_is_a_keep_probability_and_init_is_he_normal():
    network = build("mnist_lenet", input_shape=MNIST, num_classes=10, keep_probability=0.75)
    assert [m.p for m in network.modules() if isinstance(m, nn.Dropout)] == [0.25]
    fc = network[-4]  # 3136 -> 1024: enough weights to estimate the spread
    assert abs(fc.weight.std().item() - math.sqrt(2 / 3136)) < 0.02 * math.sqrt(2 / 3136)
    assert all(bool((m.bias == 0).all()) for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_alexnet_shapes_follow_the_notes_table():
    network = on_meta("alexnet", (3, 227, 227), 1000)
    image = torch.empty(1, 3, 227, 227, device="meta")
    x, shapes = image, []
    for layer in network.features:
        x = layer(x)
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(96, 55, 55), (96, 27, 27), (256, 27, 27), (256, 13, 13), (384, 13, 13), (384, 13, 13),
                      (256, 13, 13), (256, 6, 6)]
    assert network(image).shape == (1, 1000)


@pytest.mark.parametrize("name, params, stack_channels", [
    ("preact_resnet", {"depth": 20}, (16, 32, 64)),
    ("preact_resnet", {"depth": 65, "block": "bottleneck"}, (64, 128, 256)),
    ("wide_resnet", {"depth": 40, "widen_factor": 4}, (64, 128, 256)),
])
def test_residual_stacks_work_on_32_16_and_8_pixel_maps(name, params, stack_channels):
    """Fig. 4.17: stacks on 32x32, 16x16 and 8x8 maps, then GAP and a linear layer."""
    network = on_meta(name, **params)
    image = torch.empty(2, *CIFAR, device="meta")
    x = network.conv(image)
    for stack, channels, size in zip((network.stack1, network.stack2, network.stack3), stack_channels, (32, 16, 8)):
        x = stack(x)
        assert x.shape == (2, channels, size, size)
    assert network(image).shape == (2, 10)


def test_densenet_blocks_grow_by_k_per_layer():
    vanilla = on_meta("densenet", depth=40, growth_rate=12)
    assert vanilla.fc.in_features == 16 + 3 * 12 * 12  # transitions keep the maps (compression 1)
    bc = on_meta("densenet", depth=100, growth_rate=12, bottleneck=True, compression=0.5)
    assert bc.conv.out_channels == 24 and bc.fc.in_features == 342  # 2k stem; 216 -> 108 -> 300 -> 150 -> 342


@pytest.mark.parametrize("name, input_shape, params", [
    ("nin", CIFAR, {"filters": "cifar"}),
    ("nin", MNIST, {"filters": "mnist", "batch_norm": True}),
    ("bn_vgg", CIFAR, {}),
    ("mnist_baseline", MNIST, {}),
    ("lenet5", MNIST, {}),  # zero-padded to 32x32 as LeCun's MNIST
])
def test_small_image_networks_return_logits(name, input_shape, params):
    network = on_meta(name, input_shape, 100, **params)
    assert network(torch.empty(2, *input_shape, device="meta")).shape == (2, 100)


@pytest.mark.parametrize("name, params", [
    ("preact_resnet", {"depth": 8}), ("preact_resnet", {"depth": 11, "block": "bottleneck"}),
    ("wide_resnet", {"depth": 10, "widen_factor": 2, "dropout": 0.3}),
    ("densenet", {"depth": 7, "growth_rate": 4, "dropout": 0.2}),
    ("densenet", {"depth": 10, "growth_rate": 4, "bottleneck": True, "compression": 0.5}),
    ("nin", {"filters": [[8, 8, 8], [8, 8, 8], [8, 8]], "batch_norm": True}),
])
def test_smallest_networks_of_each_family_train(name, params):
    """A real forward and backward pass (in-place activations must not break autograd)."""
    network = build(name, input_shape=CIFAR, num_classes=10, **params).train()
    F.cross_entropy(network(torch.rand(2, *CIFAR)), torch.tensor([1, 2])).backward()
    assert all(p.grad is not None for p in network.parameters())


def test_nin_ends_in_class_maps_and_global_average_pooling():
    network = on_meta("nin", CIFAR, 100, filters="cifar")
    last_conv = [m for m in network if isinstance(m, nn.Conv2d)][-1]
    assert last_conv.out_channels == 100 and isinstance(network[-2], nn.AdaptiveAvgPool2d)


# -- GoogLeNet's auxiliary classifiers -------------------------------------------------------------------------------
def test_googlenet_returns_auxiliary_logits_while_training_and_logits_in_eval():
    network = on_meta("googlenet", IMAGENET, 10)
    x = torch.empty(2, *IMAGENET, device="meta")
    out = network.train()(x)
    assert isinstance(out, AuxiliaryLogits) and out.auxiliary_weight == 0.3
    assert out.logits.shape == (2, 10) and [a.shape for a in out.auxiliary] == [(2, 10), (2, 10)]
    assert isinstance(network.eval()(x), torch.Tensor) and network(x).shape == (2, 10)
    without_heads = on_meta("googlenet", IMAGENET, 10, auxiliary_heads=False)
    assert isinstance(without_heads.train()(x), torch.Tensor)


def test_googlenet_is_the_papers_network():
    network = on_meta("googlenet", IMAGENET, 1000)
    assert network.inception3a.branch3[1].conv.kernel_size == (5, 5)  # torchvision keeps a 3x3 there
    assert not any(isinstance(m, nn.BatchNorm2d) for m in network.modules())
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in network.modules()) == 2
    assert any(isinstance(m, nn.BatchNorm2d) for m in on_meta("googlenet", IMAGENET, 10, batch_norm=True).modules())


def test_auxiliary_losses_are_weighted_into_the_training_loss():
    labels = torch.tensor([0, 2])
    main, aux1, aux2 = (torch.randn(2, 3) for _ in range(3))
    logits, loss = classification_loss(AuxiliaryLogits(main, (aux1, aux2), 0.3), labels)
    expected = F.cross_entropy(main, labels) + 0.3 * (F.cross_entropy(aux1, labels) + F.cross_entropy(aux2, labels))
    assert logits is main and torch.allclose(loss, expected)
    logits, loss = classification_loss(main, labels)
    assert logits is main and torch.allclose(loss, F.cross_entropy(main, labels))


# -- heads that class activation maps can read -----------------------------------------------------------------------
@pytest.mark.parametrize("name, input_shape, params", [
    ("preact_resnet", CIFAR, {"depth": 20}), ("wide_resnet", CIFAR, {"depth": 40, "widen_factor": 4}),
    ("densenet", CIFAR, {"depth": 40, "growth_rate": 12}), ("densenet121", IMAGENET, {}),
])
def test_gap_linear_networks_end_in_pool_flatten_linear(name, input_shape, params):
    """The head class activation maps read (densenet121-264 re-assemble torchvision's functional head)."""
    num_classes = 1000 if input_shape == IMAGENET else 10
    pool, flatten, linear = list(on_meta(name, input_shape, num_classes, **params).children())[-3:]
    assert isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size == 1
    assert isinstance(flatten, nn.Flatten) and isinstance(linear, nn.Linear)


@pytest.mark.parametrize("name", ["resnet18", "resnet152", "googlenet"])
def test_torchvision_gap_linear_heads_are_avgpool_and_fc_attributes(name):
    network = on_meta(name, IMAGENET, 1000)
    assert network.avgpool.output_size in (1, (1, 1)) and isinstance(network.fc, nn.Linear)


# -- refused hyper-parameters ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params, message", [
    ("preact_resnet", {"depth": 21}, r"model\.depth: 21 .*regular blocks; allowed: 6n\+2 \(8, 14, 20"),
    ("preact_resnet", {"depth": 32, "block": "bottleneck"}, r"model\.depth: 32 .*allowed: 9n\+2 \(11, 20, 29"),
    ("wide_resnet", {"depth": 26}, r"model\.depth: 26 .*wide ResNet; allowed: 6n\+4 \(10, 16, 22, 28"),
    ("densenet", {"depth": 41}, r"model\.depth: 41 .*DenseNet; allowed: 3n\+4 \(7, 10, 13"),
    ("densenet", {"depth": 101, "bottleneck": True}, r"model\.depth: 101 .*DenseNet-B; allowed: 6n\+4"),
    ("nin", {"filters": [[8, 8, 8], [8, 8]]}, r"model\.filters: expected \[\[F1, F2, F3\].*mnist, cifar, svhn"),
])
def test_impossible_architectures_are_refused_naming_the_key(name, params, message):
    with pytest.raises(StrideError, match=message):
        build(name, input_shape=CIFAR, num_classes=10, **params)


@pytest.mark.parametrize("name, params, key", [
    ("cifar_a", {"keep_probability": 0.0}, "keep_probability"),
    ("nin", {"filters": "imagenet"}, "filters"),
    ("preact_resnet", {"block": "basic"}, "block"),
    ("densenet", {"compression": 1.5}, "compression"),
])
def test_bad_hyper_parameter_values_are_refused_by_the_registry(name, params, key):
    with pytest.raises(StrideError, match=rf"model\.{key}"):
        validate_params(name, params)


def test_inputs_a_network_cannot_take_are_refused():
    with pytest.raises(StrideError, match=r"'resnet18' takes 3-channel images .*\(1, 28, 28\)"):
        build("resnet18", input_shape=MNIST, num_classes=10)
    with pytest.raises(StrideError, match=r"'bn_vgg': input shape \(3, 16, 16\) is too small"):
        build("bn_vgg", input_shape=(3, 16, 16), num_classes=10)
