"""`stride train`: one config -> a Lightning run recorded in MLflow.

Everything that can be checked (config, dataset manifest and shards, tracking store) is
checked before the first step. Only global rank 0 talks to MLflow.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from stride.pipelines.arguments import (
    add_config_arguments,
    add_ray_arguments,
    add_tracking_argument,
    config_from_args,
    non_negative_number,
    positive_int,
    positive_number,
)

if TYPE_CHECKING:  # the heavy imports happen in the handlers, so `stride --help` stays fast
    from stride.config.schema import StrideConfig


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train one config and record it in MLflow")
    add_config_arguments(parser)
    add_tracking_argument(parser)
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="N > 1: DDP over N Ray Train workers (embedded Ray, or --address)")
    parser.add_argument("--cpus-per-worker", type=positive_number, default=1.0)
    parser.add_argument("--gpus-per-worker", type=non_negative_number, default=0.0)
    add_ray_arguments(parser)
    parser.set_defaults(handler=run_command)


@dataclass
class RecordedTraining:
    """A training and where it is recorded (rank 0; other DDP ranks record nothing)."""

    outcome: Any  # stride.training.TrainOutcome
    tracking_uri: str
    run_id: str | None = None
    experiment_id: str | None = None
    model_uri: str | None = None

    @property
    def test_metrics(self) -> dict[str, float]:
        return self.outcome.test_metrics


def train_and_record(config: StrideConfig, *, tracking_uri: str | None = None) -> RecordedTraining:
    """`stride train`'s launcher: check the data and the store, then the core recorded in an MLflow run,
    whose figures and model are published once it returned."""
    from mlflow.tracking import MlflowClient
    from pytorch_lightning.utilities import rank_zero_only

    from stride.tracking.publish import publish_training
    from stride.tracking.recorder import RunRecorder
    from stride.tracking.run import MlflowRun, fail_dead_runs
    from stride.tracking.store import check_reachable, ensure_experiment, resolve_tracking_uri
    from stride.training import Launch, open_datamodule, train

    uri = resolve_tracking_uri(tracking_uri or config.tracking.uri)
    check_reachable(uri)
    open_datamodule(config)  # every shard hashed before a run exists (once: the core then reuses it)
    # a DDP rank started by Lightning's launcher: rank 0 records (Lightning sets `rank` on `rank_zero_only` at
    # import, an attribute its type lacks)
    if cast(Any, rank_zero_only).rank != 0:
        return RecordedTraining(train(config), uri)
    fail_dead_runs(MlflowClient(uri), ensure_experiment(uri, config.tracking.experiment))
    with MlflowRun(uri, config) as run:
        recorder = RunRecorder(run)
        launch = Launch(checkpoint_dir=str(Path(config.trainer.checkpoint_dir) / run.run_id))
        outcome = train(config, callbacks=[*recorder.callbacks, announce_model_callback()], loggers=recorder.loggers,
                        launch=launch)
        model_uri = publish_training(run, outcome)
    return RecordedTraining(outcome, uri, run.run_id, run.experiment_id, model_uri)


def announce_model_callback():
    import pytorch_lightning as pl

    class AnnounceModel(pl.Callback):
        """`stride train` says what it trains before the first step: architecture, parameters, data."""

        def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
            if stage == "fit" and trainer.is_global_zero:
                config = pl_module.hparams["stride"]["config"]
                count = sum(p.numel() for p in pl_module.parameters())
                # set by Lightning at run time; pl.Trainer does not declare it
                split = cast(Any, trainer).datamodule.manifest.splits["train"].num_samples
                print(f"training {config['name']}: {config['model']['architecture']} with {count:,} parameters on "
                      f"{split:,} training samples", flush=True)

    return AnnounceModel()


def run_command(args: argparse.Namespace) -> int:
    from stride.tracking.store import ui_hint

    config = config_from_args(args)
    if args.workers > 1:
        from stride.tuning.distributed import train_with_ray

        result = train_with_ray(config, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                                gpus_per_worker=args.gpus_per_worker, tracking_uri=args.tracking_uri,
                                address=args.address, storage=args.storage)
        print(f"run {result.run_id}: {format_metrics(result.test_metrics)} ({args.workers} Ray Train workers)")
        print(f"MLflow: {ui_hint(result.tracking_uri, result.experiment_id, result.run_id)}")
        return 0
    recorded = train_and_record(config, tracking_uri=args.tracking_uri)
    if recorded.run_id:
        assert recorded.experiment_id is not None, "recorded together with run_id"
        print(f"run {recorded.run_id}: {format_metrics(recorded.outcome.test_metrics)} "
              f"({recorded.outcome.wall_time_s:.1f} s)")
        if recorded.model_uri:
            print(f"model: {recorded.model_uri}")
        print(f"MLflow: {ui_hint(recorded.tracking_uri, recorded.experiment_id, recorded.run_id)}")
    return 0


def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
