"""Search specs are checked before Ray starts: keys, ranges, corners, algorithms; and mapped onto Ray Tune."""

from pathlib import Path

import pytest
import yaml

from stride.errors import StrideError
from stride.tuning.spec import load_search, spec_names, valid_keys


def write_spec(tmp_path: Path, **fields) -> str:
    spec = {"base": "digits-cnn", "space": {"optim.lr": {"loguniform": [0.001, 0.1]}}, **fields}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_builtin_specs_load_and_include_the_quickstart():
    assert {"digits-cnn-search", "quickstart-search", "tcn-digits-search"} <= set(spec_names())
    for name in spec_names():
        assert load_search(name).dimensions


def test_unknown_key_fails_listing_the_valid_keys(tmp_path):
    path = write_spec(tmp_path, space={"optim.lrr": {"choice": [0.1]}})
    with pytest.raises(StrideError, match=r"search.yaml: space key\(s\) optim.lrr are not config keys.*"
                                          r"valid keys: .*model.channels.*optim.lr"):
        load_search(path)


def test_architecture_keys_follow_the_searched_architectures():
    assert "model.channels" in valid_keys(["digits_cnn"]) and "model.hidden_units" not in valid_keys(["digits_cnn"])
    assert "model.dilation_schedule" in valid_keys(["tcn"])
    assert not any(k.startswith("tracking.") for k in valid_keys(["tcn"]))


@pytest.mark.parametrize("dimension, message", [
    ({"uniform": [0.1, 0.01]}, r"empty or inverted range uniform\[0.1, 0.01\]"),
    ({"uniform": [0.1, 0.1]}, "empty or inverted range"),
    ({"loguniform": [0, 0.1]}, "loguniform needs lo > 0"),
    ({"randint": [1.5, 4]}, "randint bounds must be integers"),
    ({"quniform": [0.1, 0.5]}, r"quniform needs \[lo, hi, q\]"),
    ({"choice": []}, "needs a non-empty list"),
    ({"normal": [0, 1]}, "unknown kind 'normal'"),
    ({"uniform": [0.0, 2.0]}, r"reaches an invalid config at \{'optim.lr': 0.0\}: optim.lr"),
])
def test_bad_ranges_fail_naming_the_key(tmp_path, dimension, message):
    with pytest.raises(StrideError, match=message):
        load_search(write_spec(tmp_path, space={"optim.lr": dimension}))


def test_every_corner_is_validated_against_the_registry(tmp_path):
    space = {"model.architecture": {"choice": ["digits_cnn", "digits_ffn"]}, "model.channels": {"choice": [0, 16]}}
    with pytest.raises(StrideError, match=r"reaches an invalid config at \{'model.architecture': 'digits_cnn', "
                                          r"'model.channels': 0\}"):
        load_search(write_spec(tmp_path, space=space))
    # a searched architecture is a condition: channels applies to the CNN trials only
    space["model.channels"] = {"choice": [8, 16]}
    search = load_search(write_spec(tmp_path, space=space))
    assert search.config_for({"model.architecture": "digits_ffn", "model.channels": 8}).model.params == {}
    assert search.config_for({"model.architecture": "digits_cnn", "model.channels": 8}).model.params["channels"] == 8
    with pytest.raises(StrideError, match="space key.* model.kernel_size are not config keys"):
        load_search(write_spec(tmp_path, space={**space, "model.kernel_size": {"choice": [3]}}))
    space = {"model.architecture": {"choice": ["digits_cnn", "digits_ffn"]}}
    search = load_search(write_spec(tmp_path, space=space))  # the base's channels is dropped for the ffn
    assert search.config_for({"model.architecture": "digits_ffn"}).model.params == {}


def test_spec_fields_and_algorithms_are_checked(tmp_path):
    with pytest.raises(StrideError, match="invalid search spec: num_sample: Extra inputs"):
        load_search(write_spec(tmp_path, num_sample=3))
    with pytest.raises(StrideError, match="search_alg grid needs choice/grid values, but optim.lr"):
        load_search(write_spec(tmp_path, search_alg="grid"))
    with pytest.raises(StrideError, match="pbt .* can only mutate keys outside model"):
        load_search(write_spec(tmp_path, scheduler="pbt", space={"model.channels": {"choice": [8, 16]}}))


def test_space_maps_onto_ray_tune_domains(tmp_path):
    from ray.tune.search.sample import Categorical, Float, Integer

    from stride.tuning.space import param_space

    space = {"optim.lr": {"qloguniform": [0.001, 0.1, 0.001]}, "model.channels": {"randint": [8, 9]},
             "data.batch_size": {"grid": [32, 64]}, "optim.momentum": {"choice": [0.8, 0.9]}}
    search = load_search(write_spec(tmp_path, space=space))
    domains = param_space(search.spec, search.dimensions)
    assert isinstance(domains["optim.lr"], Float) and isinstance(domains["optim.momentum"], Categorical)
    assert isinstance(domains["model.channels"], Integer) and domains["model.channels"].upper == 10  # hi inclusive
    assert domains["data.batch_size"] == {"grid_search": [32, 64]}


def test_relative_base_resolves_beside_the_spec_and_data_path_becomes_absolute(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"data": {"path": "shards/x"},
                                                         "model": {"architecture": "digits_cnn"}}))
    search = load_search(write_spec(tmp_path, base="base.yaml"))
    assert Path(search.base_raw["data"]["path"]).is_absolute()


@pytest.mark.parametrize("fields, set_by_base, expected", [
    ({}, [], "deferred"),  # trials log weights; stride promote exports the one it promotes
    ({"trial_models": "exported"}, [], True),
    ({}, ["tracking.log_model=false"], False),  # no model asked for: none is exported later either
])
def test_trials_defer_their_model_export_unless_the_spec_says_otherwise(tmp_path, fields, set_by_base, expected):
    from stride.tuning.cluster import TrialResources
    from stride.tuning.trial import TrialSetup, trial_config

    search = load_search(write_spec(tmp_path, overrides=set_by_base, **fields))
    setup = TrialSetup(search, "sqlite:///unused.db", "parent", TrialResources(), str(tmp_path), "search")
    assert trial_config(setup, {"optim.lr": 0.01}, "t1").tracking.log_model == expected


def test_an_unknown_trial_models_choice_is_refused(tmp_path):
    with pytest.raises(StrideError, match="trial_models"):
        load_search(write_spec(tmp_path, trial_models="sometimes"))
