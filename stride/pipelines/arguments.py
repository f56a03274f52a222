"""Arguments shared by several commands, and turning them into a validated config."""

from __future__ import annotations

import argparse

from stride.config import StrideConfig, load_config
from stride.errors import StrideError


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="built-in recipe name (see `stride recipes`)")
    parser.add_argument("--config", help="YAML config file (instead of a recipe)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="dotted overrides, e.g. optim.lr=0.01 trainer.max_epochs=5")


def add_tracking_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the local "
                        "store ./mlruns.db)")


def config_from_args(args: argparse.Namespace) -> StrideConfig:
    if bool(args.recipe) == bool(args.config):
        raise StrideError("give either a recipe name or --config FILE (see `stride recipes`)")
    return load_config(args.config or args.recipe, args.overrides)
