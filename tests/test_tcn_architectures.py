"""TCN and recurrent baselines (docs/models.md, A2): causality, padding equivalence, receptive fields, sizes."""

import itertools

import pytest
import torch

import stride.architectures.recurrent  # noqa: F401  (registers lstm, gru)
import stride.architectures.tcn  # noqa: F401  (registers tcn)
from stride.architectures import build, names, validate_params
from stride.architectures.tcn import dilations, receptive_field, tcn_receptive_field
from stride.errors import StrideError

BLOCKS = ["single", "double", "radical"]
PADDINGS = ["left", "symmetric_trim"]
SCHEDULES = ["exponential", "linear", "linear:2", "constant", [1, 3, 2]]
SMALL = dict(kernel_size=3, channels=4, num_blocks=3, dropout=0.0)


def small_tcn(**params):
    torch.manual_seed(0)
    return build("tcn", input_shape=(2, 64), num_classes=5, **{**SMALL, **params}).eval()


def test_registered_for_sequence_classification():
    assert {"tcn", "lstm", "gru"} <= set(names("sequence_classification"))


def test_dilation_schedules():
    # The author's code (docs/models.md, A2): floor(1 + 1.4(b-1)) over 12 blocks, 1 + 3(b-1) over 6.
    assert dilations("linear", 12) == [1, 2, 3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    assert dilations("linear", 12) == dilations("linear:1.4", 12)
    assert dilations("linear", 6) == [1, 4, 7, 10, 13, 16] == dilations("linear:3", 6)
    assert dilations("linear", 1) == [1]
    assert dilations("exponential", 4) == [1, 2, 4, 8]
    assert dilations("constant", 3) == [1, 1, 1]
    assert dilations([2, 5], 2) == [2, 5]


def test_seed_receptive_fields():
    assert tcn_receptive_field() == 1001  # 12 Single blocks, k=6, linear
    assert tcn_receptive_field(block="double") == 1001
    assert tcn_receptive_field(block="radical", num_blocks=6) == 1021
    assert tcn_receptive_field(block="radical") == 1021  # default depth: the seed's 24 convs
    # Bai et al. original on SeqMNIST: 8 levels, k=7, exponential, 2 convs per level.
    assert tcn_receptive_field(num_blocks=8, kernel_size=7, dilation_schedule="exponential") == 3061
    assert receptive_field(7, [2**i for i in range(8)], convs_per_block=2) == 1 + 2 * 6 * 255
    # The text's d_b = 3b-2 and 6b-5 would give 2101 and 1921, not the stated 1001 and 1021.
    assert tcn_receptive_field(dilation_schedule=[3 * b - 2 for b in range(1, 13)]) == 2101
    assert tcn_receptive_field(block="radical", num_blocks=6,
                               dilation_schedule=[6 * b - 5 for b in range(1, 7)]) == 1921


@pytest.mark.parametrize("block,schedule", [("single", [1, 2, 3]), ("double", [1, 2, 3]),
                                            ("radical", [1, 2, 3]), ("radical", "exponential")])
def test_receptive_field_measured_by_gradient(block, schedule):
    model = small_tcn(block=block, dilation_schedule=schedule)
    with torch.no_grad():  # positive weights, biases and inputs keep every ReLU open: no zero gradients inside R
        for p in model.parameters():
            p.fill_(0.1)
    x = torch.rand(1, 2, 64).add(0.1).requires_grad_()
    model.features(x)[..., -1].sum().backward()
    seen = (x.grad.abs().sum(dim=1)[0] > 0).nonzero().flatten()
    assert seen.max().item() == 63
    assert 64 - seen.min().item() == len(seen) == model.receptive_field == tcn_receptive_field(
        block=block, dilation_schedule=schedule, **SMALL)


@pytest.mark.parametrize("block,padding,schedule", itertools.product(BLOCKS, PADDINGS, SCHEDULES))
def test_causal(block, padding, schedule):
    model = small_tcn(block=block, padding=padding, dilation_schedule=schedule)
    x = torch.randn(3, 2, 64)
    with torch.no_grad():
        for t in (0, 17, 62):
            y = x.clone()
            y[..., t + 1:] = torch.randn_like(y[..., t + 1:])
            before, after = model.features(x), model.features(y)
            assert before.shape == (3, 4, 64)
            torch.testing.assert_close(before[..., : t + 1], after[..., : t + 1], rtol=0, atol=0)
            assert not torch.equal(before[..., t + 1], after[..., t + 1])  # the test is not vacuous


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("length", [64, 3])  # 3: dilation 4 exceeds the sequence (the 1x1 shortcut)
def test_left_padding_equals_symmetric_trim(block, length):
    left = small_tcn(block=block, padding="left", dilation_schedule="exponential")
    trim = small_tcn(block=block, padding="symmetric_trim", dilation_schedule="exponential")
    torch.nn.init.normal_(left.head.weight)  # make the copy below matter
    trim.load_state_dict(left.state_dict())
    x = torch.randn(3, 2, length)
    with torch.no_grad():
        torch.testing.assert_close(left.features(x), trim.features(x))
        torch.testing.assert_close(left(x), trim(x))


@pytest.mark.parametrize("name,params", [("tcn", {}), ("tcn", {"block": "radical", "num_blocks": 6}),
                                         ("lstm", {"num_layers": 2, "dropout": 0.1}), ("gru", {})])
def test_output_is_logits_per_sample(name, params):
    model = build(name, input_shape=(1, 50), num_classes=10, **params)
    assert model(torch.randn(4, 1, 50)).shape == (4, 10)
    assert model.features(torch.randn(4, 1, 50)).shape[::2] == (4, 50)


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts():
    # Seed config (1 input channel, 32 channels, k=6, 10 classes); weight norm adds one g per output channel.
    # First conv 1*32*6 + 32 g + 32 b = 256; every other conv 32*32*6 + 32 + 32 = 6208;
    # input projection 1x1 32 + 32 + 32 = 96; head 32*10 + 10 = 330.
    # Single/Double: 256 + 23*6208 + 96 + 330; Radical (6 x 4 convs) has the same 24 convs.
    expected = 256 + 23 * 6208 + 96 + 330
    assert expected == 143_466
    for block, num_blocks in [("single", 12), ("double", 12), ("radical", 6)]:
        assert count(build("tcn", input_shape=(1, 784), num_classes=10, block=block, num_blocks=num_blocks)) == expected
    assert count(build("tcn", input_shape=(1, 784), num_classes=10, weight_norm=False)) == expected - 25 * 32
    # LSTM gates 4 x (W_ih 128*1 + W_hh 128*128 + 2 biases 128) + head 1290; GRU has 3 gates.
    assert count(build("lstm", input_shape=(1, 784), num_classes=10)) == 4 * 16_768 + 1290 == 68_362
    assert count(build("gru", input_shape=(1, 784), num_classes=10)) == 3 * 16_768 + 1290 == 51_594


def test_recipe_parameter_counts():
    """The study's recipes at their published sizes; Bai et al.: 8 levels of 25 channels, k=7."""
    from stride.config import load_config

    def recipe_count(name):
        config = load_config(name, ["data.path=unused"])
        return count(build(config.model.architecture, input_shape=(1, 784), num_classes=10, **config.model.params))

    for name in ("tcn-seqmnist-single", "tcn-seqmnist-double", "tcn-seqmnist-radical", "tcn-pmnist-single",
                 "tcn-pmnist-double", "tcn-pmnist-radical"):
        assert recipe_count(name) == 143_466, name
    # first conv 1*25*7 + 25 g + 25 b; 15 more convs 25*25*7 + 25 + 25; projection 25 + 25 + 25; head 260
    assert recipe_count("tcn-original") == 225 + 15 * 4425 + 75 + 260 == 66_935
    # Bai et al.'s ~70K-parameter RNN baselines: hidden 130; gates x (130 + 130*130 + 2*130) + head 1310
    assert recipe_count("lstm-seqmnist") == 4 * 17_290 + 1310 == 70_470
    assert recipe_count("gru-seqmnist") == 3 * 17_290 + 1310 == 53_180
    # the permuted-MNIST reference rows are the same networks on a permuted view
    for seq, permuted in (("tcn-original", "tcn-original-pmnist"), ("lstm-seqmnist", "lstm-pmnist"),
                          ("gru-seqmnist", "gru-pmnist")):
        assert recipe_count(permuted) == recipe_count(seq), permuted
        config = load_config(permuted, ["data.path=unused"])
        assert config.data.sequence_view == "permuted" and config.data.permutation_seed == 0


@pytest.mark.parametrize("params,key", [
    ({"dilation_schedule": [1, 2]}, "model.dilation_schedule"),  # 2 dilations for 12 blocks
    ({"dilation_schedule": "quadratic"}, "model.dilation_schedule"),
    ({"dilation_schedule": "linear:-1"}, "model.dilation_schedule"),
    ({"dilation_schedule": [1, 0, 2], "num_blocks": 3}, "model.dilation_schedule"),
    ({"kernel_size": 0}, "model.kernel_size"),
    ({"channels": -4}, "model.channels"),
    ({"dropout": 1.0}, "model.dropout"),
    ({"block": "triple"}, "model.block"),
    ({"padding": "right"}, "model.padding"),
])
def test_bad_hyper_parameters_name_the_key(params, key):
    with pytest.raises(StrideError, match=key):
        build("tcn", input_shape=(1, 784), num_classes=10, **params)


def test_validate_params_fills_defaults():
    assert validate_params("tcn", {}) == dict(block="single", padding="left", dilation_schedule="linear",
                                              kernel_size=6, channels=32, num_blocks=None, dropout=0.2,
                                              weight_norm=True)
    with pytest.raises(StrideError, match="model.kernel_size"):
        validate_params("tcn", {"kernel_size": -1})
    with pytest.raises(StrideError, match="model.hidden_size"):
        validate_params("gru", {"hidden_size": 0})
