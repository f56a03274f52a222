"""Studies without training: the built-in ones plan at every scale, a malformed study is one clear error naming
the field, rows become one search whose trials start from their row's config, and the report's arithmetic."""

from __future__ import annotations

import pytest
import yaml

from stride.errors import StrideError
from stride.pipelines.cli import main
from stride.tuning.spec import ROW_KEY
from stride.tuning.study import StudyReport, StudySpec, load_study, plan_study, report_rows, study_names


def test_every_built_in_study_plans_at_every_scale():
    assert {"a-table3-cnn-vs-ffn", "a-tables4-5-tcn-blocks"} <= set(study_names())
    for name in study_names():
        study, source, folder = load_study(name)
        assert all(row.published is not None for row in study.rows), name  # every built-in row cites its figure
        for scale in study.scales:
            plan = plan_study(study, source, folder, scale=scale, repeats=3, data_path="/data/somewhere")
            grid = {d.key: list(d.args) for d in plan.search.dimensions}
            assert grid == {ROW_KEY: [r.name for r in study.rows], "trainer.seed": [0, 1, 2]}
            for row in study.rows:  # each trial trains its own row's recipe, under the study's experiment
                config = plan.search.config_for({ROW_KEY: row.name, "trainer.seed": 1})
                assert config.name == f"{study.name}-{row.name}" and config.trainer.seed == 1
                assert config.tracking.experiment == f"study-{study.name}" and config.data.path == "/data/somewhere"


def test_the_smoke_scale_swaps_recipes_and_applies_row_overrides():
    study, source, folder = load_study("a-tables4-5-tcn-blocks")
    plan = plan_study(study, source, folder, scale="smoke", data_path="/data/digits")
    radical = plan.search.config_for({ROW_KEY: "p-radical"})
    assert radical.model.architecture == "tcn" and radical.model.params["block"] == "radical"
    assert radical.data.sequence_view == "permuted" and radical.trainer.max_epochs == 2
    assert plan.search.config_for({ROW_KEY: "seq-single"}).data.sequence_view == "sequential"


def write_study(tmp_path, **fields) -> str:
    study = {"title": "t", "source": "s", "metric": "test_acc", "axes": ["network"],
             "rows": [{"name": "cnn", "recipe": "digits-cnn", "axes": {"network": "CNN"}, "published": 99.0},
                      {"name": "ffn", "recipe": "digits-ffn", "axes": {"network": "FFN"}}], **fields}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(study))
    return str(path)


@pytest.mark.parametrize("fields, message", [
    ({"metric": None}, "metric: Input should be a valid string"),
    ({"rows": []}, "rows: List should have at least 1 item"),
    ({"axes": ["network", "depth"]}, "rows.cnn: no value for axes \\['depth'\\]"),
    ({"scales": {"smoke": {"recipes": {"resnet": "digits-cnn"}}}}, "scales.smoke: unknown rows \\['resnet'\\]"),
    ({"published_as": "percent"}, "published_as: Input should be 'value', 'error_percent' or 'accuracy_percent'"),
    ({"rows": [{"name": "a", "recipe": "digits-cnn"}, {"name": "a", "recipe": "digits-ffn"}], "axes": []},
     "a row name is used twice"),
    ({"rows": [{"name": "../x", "recipe": "digits-cnn"}], "axes": []}, "row name"),
])
def test_a_malformed_study_names_the_field(tmp_path, fields, message):
    with pytest.raises(StrideError, match=f"mine.yaml: invalid study: .*{message}"):
        load_study(write_study(tmp_path, **fields))


def test_a_row_that_is_not_a_valid_config_fails_before_anything_runs(tmp_path):
    study, source, folder = load_study(write_study(tmp_path))
    with pytest.raises(StrideError, match=r"row cnn \(digits-cnn\).*optim.lr"):
        plan_study(study, source, folder, overrides=["optim.lr=-1"])
    with pytest.raises(StrideError, match="no scale 'smoke'"):
        plan_study(study, source, folder, scale="smoke")


def test_rows_of_different_tasks_are_refused(tmp_path):
    path = write_study(tmp_path, rows=[{"name": "cnn", "recipe": "digits-cnn", "axes": {"network": "CNN"}},
                                       {"name": "tcn", "recipe": "tcn-digits", "axes": {"network": "TCN"}}])
    study, source, folder = load_study(path)
    with pytest.raises(StrideError, match="the rows train different tasks"):
        plan_study(study, source, folder)


def test_the_report_sets_measured_beside_published_in_the_sources_units():
    study = StudySpec.model_validate({
        "title": "T", "source": "A, Table 3", "metric": "test_acc", "published_as": "error_percent",
        "axes": ["network"], "rows": [{"name": "cnn", "recipe": "digits-cnn", "axes": {"network": "CNN"},
                                       "published": 0.5, "deviations": "batch 100 is stride's"},
                                      {"name": "ffn", "recipe": "digits-ffn", "axes": {"network": "FFN"}}]})
    trials = [{ROW_KEY: "cnn", "metric": 0.994, "parameters": 1000, "epochs": 3, "seconds": 10.0},
              {ROW_KEY: "cnn", "metric": 0.996, "parameters": 1000, "epochs": 3, "seconds": 14.0},
              {ROW_KEY: "ffn", "metric": None, "parameters": None, "epochs": 1, "seconds": None}]
    cnn, ffn = report_rows(study, trials)
    assert cnn.measured == pytest.approx([0.6, 0.4]) and cnn.mean == pytest.approx(0.5)
    assert cnn.difference == pytest.approx(0.0, abs=1e-9) and cnn.wall_time_s == 12.0
    assert ffn.mean is None and ffn.difference is None
    text = StudyReport(study, "full", "2 x NVIDIA H200", [cnn, ffn]).markdown()
    assert "| cnn | CNN | 0.5 | 0.5 ± 0.14 (n=2) | 0 | 1,000 | 3 | 12 s | batch 100 is stride's |" in text
    assert "| ffn | FFN | not published | no finished run |" in text
    assert "Hardware: 2 x NVIDIA H200" in text


def test_list_and_show(capsys):
    assert main(["study", "list"]) == 0
    listed = capsys.readouterr().out
    assert "a-table3-cnn-vs-ffn" in listed and "A, Table 3" in listed
    assert main(["study", "show", "a-tables4-5-tcn-blocks"]) == 0
    shown = capsys.readouterr().out
    assert "p-radical" in shown and "97.82" in shown and "scale smoke:" in shown
    assert main(["study", "show", "no-such-study"]) != 0
    assert "unknown study 'no-such-study'; built-in: a-table3-cnn-vs-ffn" in capsys.readouterr().err


def test_the_users_data_path_wins_over_a_prepared_one_and_overrides_reach_every_row():
    study, source, folder = load_study("a-table3-cnn-vs-ffn")
    plan = plan_study(study, source, folder, scale="smoke", data_path="/prepared/digits",
                      overrides=["data.path=/mine #1", "trainer.max_epochs=7"])
    for row in study.rows:
        config = plan.search.config_for({ROW_KEY: row.name})
        assert config.trainer.max_epochs == 7 and config.data.path == "/mine"  # YAML: ' #1' is a comment
    assert plan_study(study, source, folder, scale="smoke", data_path="/my #storage/digits").search.config_for(
        {ROW_KEY: "ffn"}).data.path == "/my #storage/digits"  # a path stride sets is taken as it is


def test_a_study_run_resumes_only_at_the_scale_it_was_started_with(tmp_path):
    from stride.tuning.search import write_record
    from stride.tuning.study_run import resume_study

    write_record(str(tmp_path), "smoke-run", {"search": {"source": "study a-table3-cnn-vs-ffn (smoke)"}})
    study, _, _ = load_study("a-table3-cnn-vs-ffn")
    with pytest.raises(StrideError, match=r"started as 'study a-table3-cnn-vs-ffn \(smoke\)'; resume it with the "
                                          "same --scale"):
        resume_study("smoke-run", study, "full", storage=str(tmp_path))


def test_a_study_resume_takes_the_flag_the_integrity_error_names():
    """A driver killed before recording its state's digests is refused on resume with a hint to pass
    --trust-storage; `stride study run` must accept it as `stride tune` does."""
    from stride.pipelines.cli import build_parser

    for command in (["study", "run", "a-table3-cnn-vs-ffn"], ["tune", "quickstart-search"]):
        args = build_parser().parse_args([*command, "--resume", "demo", "--trust-storage"])
        assert args.trust_storage is True and args.resume == "demo"
