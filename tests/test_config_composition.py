"""Recipes compose: a recipe extends a base, callbacks and loggers are config entries, loader workers fit the
machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stride.config.loading import config_to_dict, load_config, load_raw, recipe_names
from stride.errors import StrideError

CIFAR_RESNETS = {20: "regular", 32: "regular", 44: "regular", 56: "regular", 110: "regular", 65: "bottleneck",
                 83: "bottleneck", 164: "bottleneck"}


@pytest.mark.parametrize("depth,block", CIFAR_RESNETS.items())
def test_each_cifar_resnet_is_its_base_with_depth_and_block(depth, block):
    raw, source = load_raw(f"cifar10-resnet{depth}")
    assert source == f"recipe cifar10-resnet{depth} (extending base recipe cifar10-resnet)"
    assert raw["model"] == {"architecture": "preact_resnet", "depth": depth, "block": block}
    assert raw["optim"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0001}
    assert raw["trainer"] == {"max_epochs": 164} and raw["name"] == f"cifar10-resnet{depth}"


def test_bases_are_not_listed_as_recipes_but_can_be_shown():
    assert "cifar10-resnet" not in recipe_names() and "cifar10-resnet56" in recipe_names()
    assert load_raw("cifar10-resnet")[1] == "base recipe cifar10-resnet"


def test_a_users_recipe_extends_a_builtin_or_a_file_beside_it(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: cifar10-resnet56\nname: mine\noptim: {lr: 0.05}\n")
    (tmp_path / "deeper.yaml").write_text("base: mine.yaml\nname: deeper\nmodel: {depth: 110}\n")
    config = load_config(str(tmp_path / "deeper.yaml"))
    assert (config.name, config.optim.lr, config.optim.nesterov, config.model.params["depth"]) == \
        ("deeper", 0.05, True, 110)
    assert config.data.augment.random_shift_px == 4  # from the built-in base, two levels down


def test_bases_in_a_circle_and_bad_bases_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(StrideError, match=r"extend each other in a circle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_raw(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("base: [x]\n")
    with pytest.raises(StrideError, match=r"c.yaml: base: expected the name of a recipe"):
        load_raw(str(tmp_path / "c.yaml"))
    (tmp_path / "d.yaml").write_text("base: no-such-recipe\n")
    with pytest.raises(StrideError, match=r"unknown recipe 'no-such-recipe'"):
        load_raw(str(tmp_path / "d.yaml"))


def test_recipes_show_prints_the_resolved_recipe(capsys):
    from stride.pipelines.cli import main

    assert main(["recipes", "--show", "cifar10-resnet164"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# recipe cifar10-resnet164 (extending base recipe cifar10-resnet), resolved\n")
    assert "depth: 164\n  block: bottleneck\n" in shown and "nesterov: true" in shown and "num_workers: auto" in shown


def test_callbacks_and_loggers_are_checked_when_the_config_loads():
    with pytest.raises(StrideError, match=r"callbacks\[0\] \(EarlyStop\): unknown callback; known: .*EarlyStopping"):
        load_config("digits-cnn", ["callbacks=[{name: EarlyStop}]"])
    with pytest.raises(StrideError, match=r"callbacks\[0\] \(EarlyStopping\): got an unexpected keyword argument "
                                          r"'patiense'"):
        load_config("digits-cnn", ["callbacks=[{name: EarlyStopping, args: {patiense: 2}}]"])
    with pytest.raises(StrideError, match=r"loggers\[0\] \(CSVLogger\): missing a required argument: 'save_dir'"):
        load_config("digits-cnn", ["loggers=[{name: CSVLogger}]"])


def test_a_recipes_early_stopping_and_csv_logger_take_part_in_training(tiny_overrides, tmp_path):
    from stride.training import train

    # a min_delta no epoch can reach: EarlyStopping (monitor and mode: the run's val_acc, max) stops after
    # `patience` + 1 validations instead of the 6 epochs asked for
    config = load_config("digits-cnn", [*tiny_overrides, "trainer.max_epochs=6", "data.cache=none",
                                        "callbacks=[{name: EarlyStopping, args: {patience: 1, min_delta: 2.0}}]",
                                        f"loggers=[{{name: CSVLogger, args: {{save_dir: {tmp_path / 'csv'}}}}}]"])
    outcome = train(config)
    assert len(outcome.history) == 2
    [metrics] = (tmp_path / "csv").rglob("metrics.csv")
    assert "val_acc" in metrics.read_text().splitlines()[0]


def test_loader_workers_auto_leaves_the_training_loop_a_cpu(monkeypatch):
    from stride.datamodules import workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)))
    assert workers.loader_workers("auto") == 1 and workers.loader_workers(3) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert workers.loader_workers("auto") == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert workers.loader_workers("auto") == workers.MAX_AUTO_WORKERS


def test_no_recipe_hard_codes_loader_workers():
    for name in recipe_names():
        assert "num_workers" not in load_raw(name)[0].get("data", {}), name
    assert config_to_dict(load_config("faces-facenet-v1-0"))["data"]["num_workers"] == "auto"


def test_base_recipes_ship_with_the_package():
    from importlib import resources

    assert resources.files("stride.config.recipes").joinpath("bases", "cifar10-resnet.yaml").is_file()
    assert Path(__file__).resolve().parents[1].joinpath("pyproject.toml").read_text().count('"bases/*.yaml"') == 1
