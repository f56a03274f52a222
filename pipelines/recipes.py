"""`stride recipes`: the built-in configs; `--show NAME` prints one resolved (bases merged, defaults filled)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("recipes", help="list the built-in recipes, or show one resolved")
    parser.add_argument("--show", metavar="RECIPE", help="print this recipe (a name or a .yaml path) as training "
                        "would use it: the recipes it extends merged in, every default filled, validated")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stride.config.loading import config_to_yaml, load_config, load_raw, recipe_names

    if args.show:
        _, source = load_raw(args.show)
        print(f"# {source}, resolved\n{config_to_yaml(load_config(args.show))}", end="")
        return 0
    names = recipe_names()
    width = max(map(len, names), default=0)
    for name in names:
        raw, _ = load_raw(name)
        architecture = raw.get("model", {}).get("architecture", "?")
        print(f"{name:{width}s}  {architecture:15s} data={raw.get('data', {}).get('path')}")
    return 0
