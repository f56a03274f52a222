"""One schema, recipes, YAML files and --set overrides; every mistake named."""

import pytest

from stride.config import config_to_dict, flatten, load_config, recipe_names
from stride.errors import StrideError


def test_recipes_are_listed_and_valid():
    assert {"digits-cnn", "digits-ffn", "mnist-cnn-seed", "mnist-ffn-seed"} <= set(recipe_names())
    for name in recipe_names():
        load_config(name)


def test_overrides_are_typed_and_dotted():
    config = load_config("digits-cnn", ["optim.lr=0.01", "trainer.max_epochs=5", "model.channels=16",
                                        "schedule.milestones=[0.5, 0.8]"])
    assert config.optim.lr == 0.01 and config.trainer.max_epochs == 5
    assert config.model.params == {"channels": 16}
    assert config.schedule.milestones == [0.5, 0.8]
    flat = flatten(config_to_dict(config))
    assert flat["optim.lr"] == 0.01 and flat["model.architecture"] == "digits_cnn"


def test_yaml_file(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("data: {path: somewhere}\nmodel: {architecture: digits_ffn, hidden_units: 32}\n")
    config = load_config(str(path), ["optim.name=adamw"])
    assert config.model.params == {"hidden_units": 32} and config.optim.name == "adamw"


@pytest.mark.parametrize("overrides, message", [
    (["optim.lrr=1"], r"optim\.lrr: unknown key \(allowed: name, lr, momentum"),
    (["optim.lr=fast"], r"optim\.lr: .*valid number"),
    (["optim.name=adam"], r"optim\.name: .*'sgd' or 'adamw'"),
    (["model.architecture=resnet9000"], r"unknown architecture 'resnet9000'; registered: .*digits_cnn"),
    (["model.chanels=8"], r"model\.chanels: not a hyper-parameter of 'digits_cnn' \(allowed: channels\)"),
    (["schedule.milestones=[0.9, 0.5]"], r"milestones must be increasing"),
    (["trainer.max_epochs"], r"expected KEY=VALUE"),
])
def test_invalid_overrides_name_the_key(overrides, message):
    with pytest.raises(StrideError, match=message) as caught:
        load_config("digits-cnn", overrides)
    assert "recipe digits-cnn" in str(caught.value) or "KEY=VALUE" in str(caught.value)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(StrideError, match="unknown recipe 'nope'.*digits-cnn"):
        load_config("nope")
    missing = tmp_path / "missing.yaml"
    with pytest.raises(StrideError, match="missing.yaml does not exist"):
        load_config(str(missing))
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(StrideError, match="broken.yaml: not valid YAML"):
        load_config(str(broken))
    no_model = tmp_path / "no_model.yaml"
    no_model.write_text("data: {path: x}\n")
    with pytest.raises(StrideError, match=r"no_model.yaml: invalid config: model: required"):
        load_config(str(no_model))


def test_repeated_set_flags_accumulate():
    from stride.pipelines.cli import build_parser

    args = build_parser().parse_args(["train", "digits-cnn", "--set", "optim.lr=0.1", "--set", "model.channels=8"])
    assert args.overrides == ["optim.lr=0.1", "model.channels=8"]
