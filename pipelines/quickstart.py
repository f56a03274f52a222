"""`stride quickstart`: the whole product on built-in data, offline, in a few minutes on a CPU.

Prepare shards -> train the seed's digit CNN -> a small ASHA search on local Ray ->
promote the experiment's best run (the stand-alone training and the search's trials compete)
to the registry -> predict on test images by alias.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from stride.pipelines.arguments import add_tracking_argument
from stride.tracking.contract import CHAMPION_ALIAS

MODEL_NAME = "quickstart-digits"
EXPERIMENT = "quickstart"
# the digits-cnn recipe at half its width and 8 of its 12 epochs: above 99% test accuracy in a
# quarter of the time (docs/benchmarks.md), so the whole quickstart stays within a minute on 2 cores
QUICK_TRAINING = ["model.channels=32", "trainer.max_epochs=8"]


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("quickstart", help="prepare the built-in digits, train, tune, promote, predict "
                                 "(offline)")
    parser.add_argument("--workdir", default=".", help="where shards, checkpoints, Ray results and the MLflow "
                        "store go")
    parser.add_argument("--skip-search", action="store_true", help="train and report only (no Ray, no registry)")
    add_tracking_argument(parser)
    parser.set_defaults(handler=run)


def stage(number: int, total: int, text: str) -> None:
    print(f"\n[{number}/{total}] {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    from stride.config import load_config
    from stride.datamodules.manifest import MANIFEST_NAME, read_manifest
    from stride.datamodules.sources.digits import prepare_digits
    from stride.pipelines.train import train_and_record
    from stride.tracking.store import resolve_tracking_uri, ui_command, ui_link

    started = time.perf_counter()
    workdir = Path(args.workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    stages = 2 if args.skip_search else 5
    shards = workdir / "shards" / "digits"
    stage(1, stages, f"preparing the built-in digits (scikit-learn, 1,797 images) -> {shards}")
    if (shards / MANIFEST_NAME).is_file():
        print("      already prepared; reusing it")
    else:
        prepare_digits(shards)
    uri = resolve_tracking_uri(args.tracking_uri, workdir)
    data_overrides = [f"data.path={shards}", f"trainer.checkpoint_dir={workdir / 'checkpoints'}"]
    config = load_config("digits-cnn", [*data_overrides, *QUICK_TRAINING, f"tracking.experiment={EXPERIMENT}"])
    stage(2, stages, f"training {config.name} ({config.model.architecture}) for {config.trainer.max_epochs} epochs")
    result = train_and_record(config, tracking_uri=uri)
    accuracy = result.outcome.test_metrics["test_acc"]
    print(f"      test accuracy {accuracy:.2%}, run {result.run_id}")
    test_count = read_manifest(shards).splits["test"].num_samples
    summary = [("test accuracy", f"{accuracy:.2%} on {test_count} held-out digits"),
               ("MLflow run id", str(result.run_id)), ("model", str(result.model_uri))]
    if not args.skip_search:
        summary += search_promote_predict(workdir, shards, data_overrides, uri, stages, args.verbose)
    summary += [("total time", f"{time.perf_counter() - started:.0f} s"),
                ("runs in the UI", ui_link(uri, str(result.experiment_id)))]
    if command := ui_command(uri):
        summary.append(("serve the UI", command))
    print()
    for label, value in summary:
        print(f"{label:<14}: {value}")
    return 0


def search_promote_predict(workdir: Path, shards: Path, data_overrides: list[str], uri: str, stages: int,
                           verbose: bool = False) -> list[tuple[str, str]]:
    from stride.registry import predict_files, promote_best, write_sample_images
    from stride.tracking.store import ui_link
    from stride.tuning import run_search

    stage(3, stages, "searching channels x learning rate with ASHA on a local Ray (4 trials)")
    search = run_search("quickstart-search", overrides=data_overrides, tracking_uri=uri,
                        storage=str(workdir / "ray_results"), verbose=verbose)
    print(search.table())
    stage(4, stages, f"promoting the experiment's best run (training or trial) to the registry as "
                     f"{MODEL_NAME}@{CHAMPION_ALIAS}")
    promotion = promote_best(uri, experiment=EXPERIMENT, model_name=MODEL_NAME)
    print(promotion.summary())
    stage(5, stages, f"predicting test images with models:/{MODEL_NAME}@{CHAMPION_ALIAS}")
    samples = write_sample_images(shards, workdir / "predict-examples", count=4)
    rows, table = predict_files(promotion.model_uri, [path for path, _ in samples], top_k=3, tracking_uri=uri)
    print(table)
    correct = sum(row.label == truth for row, (_, truth) in zip(rows, samples))
    best = "no finished trial" if search.best_metric is None else f"best {search.metric} {search.best_metric:.4f}"
    return [("search", f"{search.parent_run_id} ({best}, {search.wall_time_s:.0f} s)"),
            ("search runs", ui_link(uri, search.experiment_id, search.parent_run_id)),
            (CHAMPION_ALIAS, f"{promotion.model_uri} (run {promotion.candidate.run_id}, "
                         f"{promotion.candidate.metric_key} {promotion.candidate.value:.4f})"),
            ("predictions", f"{correct}/{len(rows)} sample images right"),
            ("predict", f"stride predict --model {promotion.model_uri} IMAGE.png --tracking-uri {uri}")]
