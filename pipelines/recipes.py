"""`stride recipes`: the built-in configs."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("recipes", help="list the built-in recipes")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stride.config.loading import load_raw, recipe_names

    for name in recipe_names():
        raw, _ = load_raw(name)
        print(f"{name:28s} {raw.get('model', {}).get('architecture', '?'):14s} data={raw.get('data', {}).get('path')}")
    return 0
