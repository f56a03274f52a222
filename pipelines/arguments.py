"""Arguments shared by several commands, and turning them into a validated config."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from stride.errors import StrideError

if TYPE_CHECKING:
    from stride.config import StrideConfig


def number_type(kind: type, expected: str, accepts: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse type for a number option: refuses what is not a finite `kind` that `accepts`, as
    configs do; argparse names the option in the error (`argument --cpus-per-trial: expected ...`)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and accepts(value)):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = number_type(int, "a whole number >= 1", lambda value: value >= 1)
non_negative_int = number_type(int, "a whole number >= 0", lambda value: value >= 0)
positive_number = number_type(float, "a finite number > 0", lambda value: value > 0)
non_negative_number = number_type(float, "a finite number >= 0", lambda value: value >= 0)
open_fraction = number_type(float, "a number between 0 and 1 (both excluded)", lambda value: 0 < value < 1)
unit_interval = number_type(float, "a number from 0 to 1", lambda value: 0 <= value <= 1)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="built-in recipe name (see `stride recipes`)")
    parser.add_argument("--config", help="YAML config file (instead of a recipe)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="dotted overrides, e.g. optim.lr=0.01 trainer.max_epochs=5")


def add_tracking_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the local "
                        "store ./mlruns.db)")


def add_image_output_arguments(parser: argparse.ArgumentParser) -> None:
    """What every command that reads users' image files and prints per-file results takes."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--max-pixels", type=positive_int, default=50_000_000,
                        help="refuse images larger than this many pixels, from their header (default 50,000,000)")
    add_tracking_argument(parser)


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray cluster address HOST:6379 or ray://HOST:10001 (default: $RAY_ADDRESS, "
                        "else an embedded local Ray)")
    parser.add_argument("--storage", default="ray_results", help="folder or URI for trial checkpoints and search "
                        "state; shared by all nodes on a multi-node cluster (default: ./ray_results)")


def add_trust_storage_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-storage", action="store_true",
                        help="with --resume: load the saved state even if it does not match the digests the search "
                             "recorded in MLflow (Ray unpickles it: only for folders nobody else can write)")


def config_from_args(args: argparse.Namespace) -> StrideConfig:
    from stride.config import load_config

    if bool(args.recipe) == bool(args.config):
        raise StrideError("give either a recipe name or --config FILE (see `stride recipes`)")
    return load_config(args.config or args.recipe, args.overrides)
