"""`stride study`: a table of the research as one command (list, show, run, resume, report)."""

from __future__ import annotations

import argparse
import shlex
import sys

from stride.pipelines.arguments import (
    add_ray_arguments,
    add_tracking_argument,
    add_trust_storage_argument,
    non_negative_number,
    positive_int,
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("study", help="reproduce a table of the research: rows on Ray, measured vs published")
    actions = parser.add_subparsers(dest="action", required=True, metavar="{list,show,run,report}")
    actions.add_parser("list", help="the built-in studies").set_defaults(handler=list_studies)
    show = actions.add_parser("show", help="a study's rows, published figures and scales")
    show.add_argument("study", help="built-in study name or a study YAML file")
    show.set_defaults(handler=show_study)
    run = actions.add_parser("run", help="train every row (x --repeats seeds) as one Ray Tune grid and report")
    run.add_argument("study", nargs="?", help="built-in study name or a study YAML file")
    run.add_argument("--scale", default="full", help="full: the published setting; smoke: built-in data, minutes "
                     "on a CPU (default: full)")
    run.add_argument("--repeats", type=positive_int, default=1, help="seeds per row; the report gives mean ± std")
    run.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                     help="overrides for every row, e.g. data.path=shards/mnist")
    run.add_argument("--name", help="name of this study run in --storage and MLflow (default: STUDY-DATE-TIME)")
    run.add_argument("--resume", metavar="NAME", help="continue the interrupted study run NAME from --storage "
                     "(with the study and --scale it was started with)")
    add_trust_storage_argument(run)
    run.add_argument("--gpus-per-row", type=non_negative_number, default=0.0, help="GPUs per row's trial")
    run.add_argument("--cpus-per-row", type=non_negative_number, default=1.0, help="CPUs per row's trial")
    add_ray_arguments(run)
    add_tracking_argument(run)
    run.set_defaults(handler=run_study_command)
    report = actions.add_parser("report", help="the report of a study run, made again from the tracking store")
    report.add_argument("--run", required=True, metavar="RUN_ID", help="the study run's MLflow parent run id")
    add_tracking_argument(report)
    report.set_defaults(handler=report_command)


def list_studies(args: argparse.Namespace) -> int:
    from stride.tuning.study import load_study, study_names

    names = study_names()
    width = max(map(len, names), default=0)
    for name in names:
        study, _, _ = load_study(name)
        rows = f"{len(study.rows)} row" + ("s" if len(study.rows) != 1 else "")
        print(f"{name:{width}s}  {study.source}: {rows}, scales {', '.join(study.scales)}")
    return 0


def show_study(args: argparse.Namespace) -> int:
    from stride.text_table import align_columns
    from stride.tuning.study import load_study

    study, source, _ = load_study(args.study)
    print(f"{study.title}\n{study.source}; figure: {study.metric} as {study.published_as}; from {source}\n")
    header = ("row", "recipe", *study.axes, "published", "deviations")
    print(align_columns([header, *((row.name, row.recipe, *(str(row.axes[a]) for a in study.axes),
                                    "" if row.published is None else f"{row.published:g}", row.deviations)
                                   for row in study.rows)]))
    for name, scale in study.scales.items():
        changes = [*(f"{row}: {recipe}" for row, recipe in scale.recipes.items()), *scale.overrides]
        print(f"\nscale {name}: " + ("; ".join(changes) or "the rows as listed")
              + (f"; prepares the built-in {scale.prepare}" if scale.prepare else ""))
    return 0


def run_study_command(args: argparse.Namespace) -> int:
    from stride.errors import StrideError
    from stride.tracking.store import ui_hint
    from stride.tuning import TrialResources
    from stride.tuning.search import SearchStopped
    from stride.tuning.study import load_study, plan_study
    from stride.tuning.study_run import prepare_built_in, resume_study, run_study

    try:
        if not args.study:
            raise StrideError("name a study (see `stride study list`) or a study YAML file")
        study, source, folder = load_study(args.study)
        if args.resume:
            if args.scale not in study.scales:
                raise StrideError(f"{source}: no scale {args.scale!r} (scales: {', '.join(study.scales)})")
            result, report = resume_study(args.resume, study, args.scale, tracking_uri=args.tracking_uri,
                                          storage=args.storage, address=args.address,
                                          trust_storage=args.trust_storage)
        else:
            scale = study.scales.get(args.scale)
            own_data = any(item.startswith("data.path=") for item in args.overrides)  # nothing to prepare then
            data_path = prepare_built_in(scale.prepare if scale and not own_data else None, args.storage)
            plan = plan_study(study, source, folder, scale=args.scale, repeats=args.repeats, overrides=args.overrides,
                              data_path=data_path)
            resources = TrialResources(cpus=args.cpus_per_row, gpus=args.gpus_per_row)
            result, report = run_study(plan, tracking_uri=args.tracking_uri, storage=args.storage, name=args.name,
                                       address=args.address, resources=resources)
    except SearchStopped as stopped:
        print(resume_hint(args, stopped.name, stopped.tracking_uri), file=sys.stderr)
        raise
    print()
    print(report.markdown())
    print(f"study run {result.name}: parent run {result.parent_run_id}; {result.wall_time_s:.0f} s; report and "
          f"figure logged there (study/report.md, plots/)")
    print(f"MLflow: {ui_hint(result.tracking_uri, result.experiment_id, result.parent_run_id)}")
    if result.interrupted:
        print(resume_hint(args, result.name, result.tracking_uri))
        return 130
    return 0


def report_command(args: argparse.Namespace) -> int:
    from stride.tuning.study_run import report_study

    print(report_study(args.run, args.tracking_uri).markdown())
    return 0


def resume_hint(args: argparse.Namespace, name: str, tracking_uri: str) -> str:
    from stride.tracking.store import resolve_tracking_uri

    command = ["stride", "study", "run", args.study, "--scale", args.scale, "--resume", name, "--storage",
               args.storage]
    if tracking_uri != resolve_tracking_uri():
        command += ["--tracking-uri", tracking_uri]
    return f"interrupted; continue with: {shlex.join(command)}"
