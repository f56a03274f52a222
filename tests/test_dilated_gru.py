"""The dilated GRU reference row (docs/models.md, A2; Chang et al. 2017): recurrences over steps 2^l apart,
causal, classifying from the last step."""

from __future__ import annotations

import torch

from stride.architectures import build


def test_a_dilated_layer_links_only_steps_its_dilation_apart_and_never_reads_the_future():
    torch.manual_seed(0)
    network = build("dilated_gru", input_shape=(1, 12), num_classes=10, hidden_size=4, num_layers=1)
    network.dilations = [3]  # one layer, steps 3 apart
    x = torch.randn(2, 1, 12)
    base = network.features(x)
    changed = x.clone()
    changed[:, :, 7] += 1.0
    moved = (network.features(changed) - base).abs().sum(dim=(0, 1)) > 0
    assert moved.nonzero().flatten().tolist() == [7, 10]  # step 7 and the steps of its stream after it


def test_the_stack_spans_the_sequence_and_classifies_from_the_last_step():
    network = build("dilated_gru", input_shape=(1, 784), num_classes=10)
    assert network.dilations == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    x = torch.randn(3, 1, 784, requires_grad=True)
    network(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad[:, :, 0].abs().sum() > 0  # the first pixel reaches the output
    assert network(torch.randn(2, 1, 50)).shape == (2, 10)  # any length
