"""The learning-rate multipliers the recipes rely on: step decay with one factor or one per milestone (NiN on
MNIST: /2 after 40 and /5 after 50 of 60 epochs), the TCN seed's step warm-up, and a malformed schedule refused."""

from __future__ import annotations

import pytest

from stride.config import load_config
from stride.config.schema import ScheduleConfig
from stride.errors import StrideError
from stride.lightning_modules.schedules import lr_multiplier


def test_one_factor_for_every_milestone():
    multiplier = lr_multiplier(ScheduleConfig(name="step", milestones=[0.5, 0.75], gamma=0.1), total_steps=100)
    assert [multiplier(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_a_factor_per_milestone_reproduces_nin_on_mnist():
    config = load_config("mnist-nin", ["data.path=unused"])
    epochs, steps_per_epoch = config.trainer.max_epochs, 10
    multiplier = lr_multiplier(config.schedule, total_steps=epochs * steps_per_epoch)
    lr = {epoch: config.optim.lr * multiplier(epoch * steps_per_epoch) for epoch in (0, 39, 40, 49, 50, 59)}
    assert lr == pytest.approx({0: 0.02, 39: 0.02, 40: 0.01, 49: 0.01, 50: 0.002, 59: 0.002})


def test_the_tcn_seeds_step_warm_up():
    config = load_config("tcn-seqmnist-single", ["data.path=unused"])
    multiplier = lr_multiplier(config.schedule, total_steps=100_000)
    lr = [config.optim.lr * multiplier(step) for step in (0, 99, 100, 999, 1000, 69_999, 70_000, 90_000)]
    assert lr == pytest.approx([0.001, 0.001, 0.01, 0.01, 0.1, 0.1, 0.01, 0.001])


def test_a_factor_list_of_the_wrong_length_names_the_field():
    with pytest.raises(StrideError, match=r"schedule.*gamma: a list needs one factor per milestone \(2\), got 3"):
        load_config("mnist-nin", ["data.path=unused", "schedule.gamma=[0.5,0.2,0.1]"])
