"""`stride promote`: the best run of an experiment or search -> the registry, if it beats the champion."""

from __future__ import annotations

import argparse

from stride.pipelines.arguments import add_tracking_argument, non_negative_number
from stride.tracking.contract import CHAMPION_ALIAS, previous_alias


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "promote", help="register the best run as the model's champion if it beats the current one",
        description="Pick the best finished run (by --metric), re-evaluate it on its dataset's test split, compare "
                    "it with the current champion on the same split, and register it only if it is better on its "
                    "task's quality metric (test accuracy for classification) by at least --min-delta. A refusal "
                    "by the gate is not an error (exit 0).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--experiment", help="choose among the runs of this experiment")
    source.add_argument("--search", metavar="RUN_ID", help="choose among the trials of this search (parent run id)")
    source.add_argument("--run", metavar="RUN_ID", help="promote exactly this run")
    parser.add_argument("--model-name", required=True, help="registered model name, e.g. digits-classifier")
    parser.add_argument("--metric",
                        help="selection metric; best_<metric> (the kept checkpoint) is used where logged, else the "
                             "metric's last value (default: the task's, val_acc for classification)")
    parser.add_argument("--mode", choices=("max", "min"), help="whether higher or lower --metric wins (default: the "
                        "task's)")
    parser.add_argument("--min-delta", type=non_negative_number, default=0.0,
                        help="how much better the challenger must test than the champion (default 0: any gain)")
    parser.add_argument("--force", action="store_true", help="promote even if the gate refuses (recorded as forced)")
    parser.add_argument("--alias", default=CHAMPION_ALIAS, help="alias to move (the old holder of @"
                        f"{CHAMPION_ALIAS} gets @{previous_alias(CHAMPION_ALIAS)})")
    parser.add_argument("--data", help="dataset folder to evaluate on, if it moved since training (its manifest "
                                       "sha256 must match the run's)")
    parser.add_argument("--lock-timeout", type=non_negative_number, default=120.0, metavar="SECONDS",
                        help="how long to wait for a concurrent promotion of the same model")
    add_tracking_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stride.registry import promote_best

    result = promote_best(args.tracking_uri, model_name=args.model_name, experiment=args.experiment,
                          search_id=args.search, run_id=args.run, metric=args.metric, mode=args.mode,
                          min_delta=args.min_delta, force=args.force, alias=args.alias, data=args.data,
                          lock_timeout_s=args.lock_timeout)
    print(result.summary())
    if result.promoted:
        print(f"MLflow    : {registry_link(args.tracking_uri, result.model_name, result.version)}")
    return 0


def registry_link(tracking_uri: str | None, model_name: str, version: str | None) -> str:
    from stride.tracking.store import LOCAL_UI, resolve_tracking_uri, ui_command

    uri = resolve_tracking_uri(tracking_uri)
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    link = f"{base}/#/models/{model_name}/versions/{version}"
    command = ui_command(uri)
    return f"{link}  (serve it with: {command})" if command else link
