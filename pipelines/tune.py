"""`stride tune`: run a search spec on Ray Tune (embedded or a cluster), or resume one."""

from __future__ import annotations

import argparse
import shlex
import sys

from stride.errors import StrideError
from stride.pipelines.arguments import (
    add_ray_arguments,
    add_tracking_argument,
    add_trust_storage_argument,
    non_negative_number,
    positive_int,
    positive_number,
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("tune", help="run a hyperparameter/architecture search on Ray Tune")
    parser.add_argument("spec", nargs="?", help="built-in search spec name (see --list)")
    parser.add_argument("--config", help="search spec YAML file (instead of a built-in name)")
    parser.add_argument("--list", action="store_true", help="list the built-in search specs")
    parser.add_argument("--resume", metavar="NAME", help="continue the interrupted search NAME from --storage")
    add_trust_storage_argument(parser)
    parser.add_argument("--name", help="name of this search in --storage and MLflow (default: SPEC-DATE-TIME)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="overrides for the base training config, e.g. data.path=shards/digits")
    parser.add_argument("--num-samples", type=positive_int, help="override the spec's num_samples")
    parser.add_argument("--scheduler", choices=["asha", "fifo", "pbt"], help="override the spec's scheduler")
    parser.add_argument("--cpus-per-trial", type=positive_number, default=1.0,
                        help="CPUs per trial (split over its workers)")
    parser.add_argument("--gpus-per-trial", type=non_negative_number, default=0.0,
                        help="GPUs per trial (split over its workers)")
    parser.add_argument("--workers-per-trial", type=positive_int, default=1,
                        help="N > 1: each trial trains with Ray Train DDP over N workers")
    add_ray_arguments(parser)
    add_tracking_argument(parser)
    parser.set_defaults(handler=run_command)


def list_specs() -> None:
    from stride.tuning.spec import read_spec, spec_names

    for name in spec_names():
        data, _, _ = read_spec(name)
        keys = ", ".join(data.get("space", {}))
        print(f"{name:22s} base={data.get('base')} samples={data.get('num_samples', 8)} space: {keys}")


def run_command(args: argparse.Namespace) -> int:
    if args.list:
        list_specs()
        return 0
    from stride.tracking.store import ui_hint
    from stride.tuning.search import SearchStopped

    try:
        result = _run_or_resume(args)
    except SearchStopped as stopped:
        print(resume_hint(stopped.name, args.storage, stopped.tracking_uri), file=sys.stderr)
        raise
    print()
    print(result.table())
    print()
    print(f"search {result.name}: best {result.metric}={result.best_metric} (trial {result.best_trial_id}, "
          f"MLflow run {result.best_run_id}); parent run {result.parent_run_id}; {result.wall_time_s:.0f} s")
    print(f"MLflow: {ui_hint(result.tracking_uri, result.experiment_id, result.parent_run_id)}")
    if result.interrupted:
        print(resume_hint(result.name, args.storage, result.tracking_uri))
        return 130
    return 0


def _run_or_resume(args: argparse.Namespace):
    from stride.tuning import TrialResources
    from stride.tuning.search import resume_search, run_search

    if args.resume:
        if args.spec or args.config:
            raise StrideError("--resume NAME continues a search with its recorded spec; give no spec with it")
        return resume_search(args.resume, storage=args.storage, address=args.address, verbose=args.verbose,
                             tracking_uri=args.tracking_uri, trust_storage=args.trust_storage)
    if bool(args.spec) == bool(args.config):
        raise StrideError("give either a built-in search spec name or --config FILE (see `stride tune --list`)")
    spec_overrides = {}
    if args.num_samples is not None:
        spec_overrides["num_samples"] = args.num_samples
    if args.scheduler:
        spec_overrides["scheduler"] = args.scheduler
    resources = TrialResources(args.cpus_per_trial, args.gpus_per_trial, args.workers_per_trial)
    return run_search(args.config or args.spec, overrides=args.overrides, tracking_uri=args.tracking_uri,
                      storage=args.storage, name=args.name, address=args.address, resources=resources,
                      spec_overrides=spec_overrides, verbose=args.verbose)


def resume_hint(name: str, storage: str, tracking_uri: str) -> str:
    """The command that continues the search. It names the tracking store unless that is where a plain
    `stride tune` would look anyway: the resume takes the store only from its user (tuning.search)."""
    from stride.tracking.store import resolve_tracking_uri

    command = ["stride", "tune", "--resume", name, "--storage", storage]
    if tracking_uri != resolve_tracking_uri():
        command += ["--tracking-uri", tracking_uri]
    return f"interrupted; continue with: {shlex.join(command)}"
