"""Every number option of every `stride` command refuses what configs refuse (non-finite, negative, zero
where it means nothing) with argparse's error naming the option, before anything runs."""

from __future__ import annotations

import argparse

import pytest

from stride.pipelines.cli import build_parser


def takes_a_number(action: argparse.Action) -> bool:
    """A bare int or float, or one of the number types of stride.pipelines.arguments."""
    return action.type in (int, float) or getattr(action.type, "__module__", None) == "stride.pipelines.arguments"


def command_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) for `stride` and each of its commands and subcommands."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_parsers(sub, (*path, name))


def number_options() -> list[tuple[tuple[str, ...], argparse.ArgumentParser, argparse.Action]]:
    return [(path, parser, action) for path, parser in command_parsers(build_parser()) for action in parser._actions
            if takes_a_number(action)]


def test_no_option_takes_a_bare_int_or_float():
    bare = [f"stride {' '.join(path)} {action.option_strings or action.dest}" for path, _, action in number_options()
            if action.type in (int, float)]
    assert not bare, f"int/float accept nan, inf or negatives; use a type of stride.pipelines.arguments: {bare}"
    assert len(number_options()) >= 30  # tune, train, data prepare, predict, explain, promote, bench


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e400", "x"])
def test_every_number_option_refuses_what_is_not_a_sensible_number(value, capsys):
    for path, parser, action in number_options():
        option = action.option_strings[-1]
        with pytest.raises(SystemExit) as stopped:
            parser.parse_args([f"{option}={value}"])
        assert stopped.value.code == 2
        assert f"argument {option}: expected " in capsys.readouterr().err, f"stride {' '.join(path)} {option}"


@pytest.mark.parametrize("argv, option", [
    (["tune", "x", "--cpus-per-trial", "nan"], "--cpus-per-trial"),
    (["tune", "x", "--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["tune", "x", "--num-samples", "0"], "--num-samples"),
    (["train", "digits-cnn", "--workers", "0"], "--workers"),
    (["data", "prepare", "digits", "--out", "d", "--val-size", "0"], "--val-size"),  # 0 would mean "the default"
    (["data", "prepare", "sequences", "--out", "d", "--val-fraction", "1"], "--val-fraction"),
    (["explain", "f.png", "--checkpoint", "c", "--threshold", "1.5"], "--threshold"),
    (["promote", "--run", "r", "--model-name", "m", "--lock-timeout=-inf"], "--lock-timeout"),
])
def test_the_cli_names_the_option_and_exits_2(argv, option, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    assert stopped.value.code == 2 and f"argument {option}: expected " in capsys.readouterr().err


@pytest.mark.parametrize("argv, attribute, value", [
    (["tune", "x", "--cpus-per-trial", "0.5", "--gpus-per-trial", "0"], "cpus_per_trial", 0.5),
    (["data", "prepare", "digits", "--out", "d", "--seed", "0", "--min-count", "0"], "min_count", 0),
    (["explain", "f.png", "--checkpoint", "c", "--threshold", "0"], "threshold", 0.0),
])
def test_sensible_numbers_still_parse(argv, attribute, value):
    assert getattr(build_parser().parse_args(argv), attribute) == value
