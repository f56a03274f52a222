"""The seed's digit classifiers: parameter counts (Table 3) and shapes."""

import pytest
import torch

from stride.architectures import build, names, validate_params, weight_count
from stride.errors import StrideError


@pytest.mark.parametrize("name, seed_weights, pytorch_total", [
    ("digits_cnn", 153_792, 154_764),  # 1*64*9 + 4*64*64*9 + 64*10*9
    ("digits_ffn", 167_168, 170_666),  # 784*128 + 4*128^2 + 128*10
])
def test_parameter_counts_match_the_seed(name, seed_weights, pytorch_total):
    network = build(name, input_shape=(1, 28, 28), num_classes=10)
    assert weight_count(network) == seed_weights
    assert sum(p.numel() for p in network.parameters()) == pytorch_total


@pytest.mark.parametrize("name", ["digits_cnn", "digits_ffn"])
def test_outputs_logits_per_class(name):
    network = build(name, input_shape=(1, 28, 28), num_classes=10).eval()
    assert network(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_cnn_layers_follow_table_1():
    network = build("digits_cnn", input_shape=(1, 28, 28), num_classes=10)
    kinds = [type(m).__name__ for m in network]
    # BatchNorm precedes every convolution, as in the seed
    assert all(kinds[i - 1] == "BatchNorm2d" for i, k in enumerate(kinds) if k == "Conv2d")
    assert kinds.count("Conv2d") == 6 and kinds.count("MaxPool2d") == 2


def test_registry_lists_and_rejects():
    assert {"digits_cnn", "digits_ffn"} <= set(names("classification"))
    with pytest.raises(StrideError, match="unknown architecture 'nope'.*digits_cnn"):
        build("nope", input_shape=(1, 28, 28), num_classes=10)
    with pytest.raises(StrideError, match=r"model\.widht: not a hyper-parameter.*allowed: channels"):
        validate_params("digits_cnn", {"widht": 3})
    with pytest.raises(StrideError, match=r"model\.channels"):
        validate_params("digits_cnn", {"channels": 0})


def test_the_three_block_cnn_halves_the_digit_three_times_and_classifies_any_size():
    import torch

    from stride.architectures import build

    network = build("three_block_cnn", input_shape=(1, 28, 28), num_classes=10)
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride) for c in convs] == [((5, 5), (2, 2))] * 3  # 001, Figure 10
    assert sum(p.numel() for p in network.parameters()) == 277_962
    assert network(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert build("three_block_cnn", input_shape=(1, 8, 8), num_classes=10)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
