"""The `stride` command line. Each subcommand lives in its own module; this file only dispatches."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from stride.errors import StrideError


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="built-in recipe name (see `stride recipes`)")
    parser.add_argument("--config", help="YAML config file (instead of a recipe)")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="dotted overrides, e.g. optim.lr=0.01 trainer.max_epochs=5")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlruns.db)")


def load_config_from_args(args: argparse.Namespace):
    from stride.config import load_config

    if bool(args.recipe) == bool(args.config):
        raise StrideError("give either a recipe name or --config FILE (see `stride recipes`)")
    return load_config(args.config or args.recipe, args.overrides)


def cmd_recipes(args: argparse.Namespace) -> int:
    from stride.config.loading import load_raw, recipe_names

    for name in recipe_names():
        raw, _ = load_raw(name)
        print(f"{name:24s} {raw.get('model', {}).get('architecture', '?'):14s} data={raw.get('data', {}).get('path')}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from stride.pipelines import prepare

    prepare.run(args)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from stride.pipelines.train import train

    config = load_config_from_args(args)
    result = train(config, tracking_uri=args.tracking_uri)
    if result.run_id:
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.test_metrics.items()))
        print(f"run {result.run_id}: {metrics} ({result.wall_time_s:.1f} s)")
        if result.model_uri:
            print(f"model: {result.model_uri}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from stride.pipelines.quickstart import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    from stride import __version__

    parser = argparse.ArgumentParser(prog="stride", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stride {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logs and tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="dataset commands").add_subparsers(dest="data_command", required=True)
    from stride.pipelines.prepare import add_arguments as prepare_arguments

    prepare = data.add_parser("prepare", help="convert a dataset to WebDataset shards with a manifest")
    prepare_arguments(prepare)
    prepare.set_defaults(handler=cmd_prepare)

    recipes = commands.add_parser("recipes", help="list the built-in recipes")
    recipes.set_defaults(handler=cmd_recipes)

    train = commands.add_parser("train", help="train one config and record it in MLflow")
    _train_arguments(train)
    train.set_defaults(handler=cmd_train)

    quick = commands.add_parser("quickstart", help="prepare the built-in digits, train, report (offline)")
    quick.add_argument("--workdir", default=".", help="where shards, checkpoints and the MLflow store go")
    quick.add_argument("--tracking-uri", help="MLflow tracking URI (default: local store in --workdir)")
    quick.set_defaults(handler=cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except StrideError as err:
        if args.verbose:
            raise
        print(f"stride: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stride: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
