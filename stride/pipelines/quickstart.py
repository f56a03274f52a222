"""`stride quickstart`: the whole product on built-in data, offline, in a few minutes on a CPU."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from stride.config import load_config
from stride.datamodules.manifest import MANIFEST_NAME
from stride.datamodules.sources.digits import prepare_digits
from stride.pipelines.arguments import add_tracking_argument
from stride.tracking.store import resolve_tracking_uri, ui_command


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("quickstart", help="prepare the built-in digits, train, report (offline)")
    parser.add_argument("--workdir", default=".", help="where shards, checkpoints and the MLflow store go")
    add_tracking_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    workdir = Path(args.workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    shards = workdir / "shards" / "digits"
    print(f"[1/2] preparing the built-in digits (scikit-learn, 1,797 images) -> {shards}")
    if (shards / MANIFEST_NAME).is_file():
        print("      already prepared; reusing it")
    else:
        prepare_digits(shards)
    uri = resolve_tracking_uri(args.tracking_uri, workdir)
    config = load_config("digits-cnn", [f"data.path={shards}", f"trainer.checkpoint_dir={workdir / 'checkpoints'}",
                                        "tracking.experiment=quickstart"])
    print(f"[2/2] training {config.name} ({config.model.architecture}) for {config.trainer.max_epochs} epochs")
    from stride.pipelines.train import train

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    result = train(config, tracking_uri=uri)
    print()
    print(f"test accuracy : {result.test_metrics['test_acc']:.2%} on {len(range(360))} held-out digits")
    print(f"MLflow run id : {result.run_id}")
    print(f"model         : {result.model_uri}")
    print(f"total time    : {time.perf_counter() - started:.0f} s")
    print(f"open the UI   : {ui_command(uri)}")
    return 0
