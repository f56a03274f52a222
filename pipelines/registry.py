"""`stride registry list|show|rollback|unlock`: what the Model Registry holds, and undoing a promotion."""

from __future__ import annotations

import argparse
import time

from stride.pipelines.arguments import add_tracking_argument
from stride.tracking.contract import CHAMPION_ALIAS, CLASS_NAMES_TAG


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("registry", help="list registered models, show one, roll back a promotion")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help_text, handler in [
        ("list", "registered models with their aliases", run_list),
        ("show", "versions, aliases, lineage and metrics of one model", run_show),
        ("rollback", "make @previous the champion again (and the champion @previous)", run_rollback),
        ("unlock", "remove a promotion lock left by a process that died", run_unlock),
    ]:
        command = actions.add_parser(action, help=help_text)
        if action != "list":
            command.add_argument("name")
        if action == "rollback":
            command.add_argument("--alias", default=CHAMPION_ALIAS)
        add_tracking_argument(command)
        command.set_defaults(handler=handler)


def _aliases(model) -> str:
    by_version: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        by_version.setdefault(str(version), []).append(f"@{alias}")
    return ", ".join(f"{' '.join(sorted(a))} = v{v}" for v, a in sorted(by_version.items(), key=lambda i: -int(i[0])))


def run_list(args: argparse.Namespace) -> int:
    from stride.registry.client import connect
    from stride.registry.lock import is_lock

    client = connect(args.tracking_uri)
    models = [m for m in client.search_registered_models(max_results=1000) if not is_lock(m)]
    if not models:
        print("no registered models (register one with `stride promote`)")
        return 0
    width = max(len(m.name) for m in models)
    for model in sorted(models, key=lambda m: m.name):
        latest = max((int(v.version) for v in model.latest_versions), default=0)
        print(f"{model.name.ljust(width)}  latest v{latest}  {_aliases(model) or 'no aliases'}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from stride.errors import StrideError
    from stride.registry.client import connect, mlflow_errors

    client = connect(args.tracking_uri)
    with mlflow_errors(f"registered model {args.name!r} (see `stride registry list`)"):
        model = client.get_registered_model(args.name)
        versions = client.search_model_versions(f"name = '{args.name}'")
    if not versions:
        raise StrideError(f"registered model {args.name!r} has no versions")
    aliases_of: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        aliases_of.setdefault(str(version), []).append(f"@{alias}")
    print(f"{model.name}: {len(versions)} version(s); {_aliases(model) or 'no aliases'}")
    for version in sorted(versions, key=lambda v: -int(v.version)):
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(version.creation_timestamp / 1000))
        print(f"\nversion {version.version} {' '.join(sorted(aliases_of.get(str(version.version), [])))}".rstrip())
        print(f"  created   {created}  run {version.run_id}  source {version.source}")
        for key in sorted(version.tags):
            if key != CLASS_NAMES_TAG:
                print(f"  {key:<32} {version.tags[key]}")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from stride.registry import rollback

    print(rollback(args.tracking_uri, args.name, alias=args.alias).summary())
    return 0


def run_unlock(args: argparse.Namespace) -> int:
    from stride.registry.client import connect
    from stride.registry.lock import break_lock

    owner = break_lock(connect(args.tracking_uri), args.name)
    print(f"removed the lock of {args.name!r} held by {owner}" if owner else f"{args.name!r} was not locked")
    return 0
