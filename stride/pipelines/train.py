"""`stride train`: one config -> a Lightning run recorded in MLflow.

Everything that can be checked (config, dataset manifest and shards, tracking store) is
checked before the first step. Only global rank 0 talks to MLflow.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import mlflow
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_only

from stride import __version__
from stride.config import config_to_dict, config_to_yaml, flatten
from stride.config.schema import StrideConfig
from stride.errors import StrideError
from stride.pipelines.arguments import add_config_arguments, add_tracking_argument, config_from_args
from stride.pipelines.speed import apply_speed_options, resolve_precision
from stride.pipelines.tasks import build_datamodule, build_module
from stride.tracking.callback import MlflowEpochMetrics
from stride.tracking.models import log_classifier
from stride.tracking.plots import plot_confusion_matrix, plot_learning_curves
from stride.tracking.store import resolve_tracking_uri, use_store

log = logging.getLogger(__name__)

# Known-harmless warnings of the pinned libraries, printed on every run: the shard streams split
# themselves across loader workers (so their __len__ is exact), and Lightning's own pytree use.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


@dataclass
class TrainResult:
    run_id: str | None
    tracking_uri: str
    test_metrics: dict[str, float]
    best_checkpoint: str
    best_val_metric: float | None
    model_uri: str | None = None
    wall_time_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train one config and record it in MLflow")
    add_config_arguments(parser)
    add_tracking_argument(parser)
    parser.add_argument("--workers", type=int, default=1,
                        help="N > 1: DDP over N Ray Train workers (embedded Ray, or --address)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    from stride.pipelines.tune import add_ray_arguments

    add_ray_arguments(parser)
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    if args.workers > 1:
        from stride.tuning.distributed import train_with_ray

        metrics = train_with_ray(config_from_args(args), workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                                 gpus_per_worker=args.gpus_per_worker, tracking_uri=args.tracking_uri,
                                 address=args.address, storage=args.storage)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("test_"))
        print(f"run {metrics.get('stride_run_id')}: {shown} ({args.workers} Ray Train workers)")
        return 0
    result = train(config_from_args(args), tracking_uri=args.tracking_uri)
    if result.run_id:
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.test_metrics.items()))
        print(f"run {result.run_id}: {metrics} ({result.wall_time_s:.1f} s)")
        if result.model_uri:
            print(f"model: {result.model_uri}")
    return 0


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def load_weights(module: torch.nn.Module, checkpoint: str | Path) -> None:
    """Load a Lightning checkpoint's weights without unpickling arbitrary objects."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
    except Exception as err:
        raise StrideError(f"checkpoint {checkpoint} cannot be loaded as stride weights: {err}") from None


def make_trainer(config: StrideConfig, callbacks: Sequence[pl.Callback], **overrides: Any) -> pl.Trainer:
    t = config.trainer
    callbacks = list(callbacks)
    if t.enable_progress_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
        # each refresh reads the step loss back from the device; once per step would stall the GPU
        callbacks.append(TQDMProgressBar(refresh_rate=t.log_every_n_steps))
    kwargs: dict[str, Any] = dict(
        max_epochs=t.max_epochs, max_steps=t.max_steps, accelerator=t.accelerator, devices=t.devices,
        strategy=t.strategy, precision=resolve_precision(t), deterministic=t.deterministic,
        log_every_n_steps=t.log_every_n_steps, gradient_clip_val=t.gradient_clip_val, callbacks=callbacks,
        enable_progress_bar=t.enable_progress_bar, logger=False, enable_model_summary=False,
        use_distributed_sampler=False,  # the shard streams split data across ranks themselves
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def train(
    config: StrideConfig,
    *,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
    extra_callbacks: Sequence[pl.Callback] = (),
    trainer_overrides: dict[str, Any] | None = None,
    global_rank: int | None = None,
    run_id: str | None = None,
    ckpt_path: str | None = None,
) -> TrainResult:
    """Fit, test the best checkpoint, and record everything in MLflow from rank 0.

    `global_rank` is needed where the launcher (e.g. Ray Train) sets it up after import;
    by default Lightning's view of the environment is used. `run_id` continues an existing
    MLflow run and `ckpt_path` a Lightning checkpoint (a restarted or resumed trial).
    """
    started = time.perf_counter()
    datamodule = build_datamodule(config)  # reads and checks the manifest before anything else
    datamodule.setup("fit")  # verifies every shard's size and sha256
    rank_zero = (rank_zero_only.rank if global_rank is None else global_rank) == 0
    uri = resolve_tracking_uri(tracking_uri or config.tracking.uri)
    if rank_zero:
        use_store(uri, config.tracking.experiment)
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    module = apply_speed_options(build_module(config, datamodule), config.trainer)

    run = None
    if rank_zero:
        tags = {"stride.version": __version__, "stride.recipe": config.name, "stride.task": config.task,
                "stride.architecture": config.model.architecture, "dataset.path": str(datamodule.root.absolute()),
                "dataset.name": datamodule.manifest.dataset, "dataset.manifest_sha256": datamodule.dataset_sha256,
                **config.tracking.tags, **(extra_tags or {})}
        if commit := git_commit():
            tags["git.commit"] = commit
        run = mlflow.start_run(run_id=run_id, run_name=config.tracking.run_name or config.name, tags=tags,
                               parent_run_id=parent_run_id, nested=parent_run_id is not None)
    try:
        return _fit_and_test(config, datamodule, module, run, uri, extra_callbacks, trainer_overrides or {}, started,
                             ckpt_path)
    except BaseException as err:
        if run is not None:  # stopped (Ctrl-C, a scheduler ending a trial) is not failed
            mlflow.end_run(status="KILLED" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "FAILED")
        raise


def _fit_and_test(config, datamodule, module, run, uri, extra_callbacks, trainer_overrides, started,
                  ckpt_path=None) -> TrainResult:
    run_id = run.info.run_id if run is not None else None
    if run is not None:
        params = flatten(config_to_dict(config))
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items() if k not in run.data.params})  # resumed
        mlflow.log_text(config_to_yaml(config), "config.yaml")
    checkpoint_dir = Path(config.trainer.checkpoint_dir) / (run_id or f"run-{int(time.time())}")
    checkpoint = ModelCheckpoint(dirpath=checkpoint_dir, filename="best-{epoch}", monitor=config.trainer.monitor,
                                 mode=config.trainer.monitor_mode, save_top_k=1, save_last=True)
    epoch_metrics = MlflowEpochMetrics(run_id)
    trainer = make_trainer(config, [checkpoint, epoch_metrics, *extra_callbacks], **trainer_overrides)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    best = checkpoint.best_model_path or checkpoint.last_model_path
    if not best:
        raise StrideError(f"training produced no checkpoint (is trainer.monitor={config.trainer.monitor!r} logged?)")
    load_weights(module, best)
    test_metrics = {k: float(v) for k, v in trainer.test(module, datamodule=datamodule, verbose=False)[0].items()}
    best_score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
    result = TrainResult(run_id, uri, test_metrics, best, best_score, history=epoch_metrics.history)
    if run is not None:
        _log_outcome(config, datamodule, module, checkpoint, epoch_metrics, result)
        result.wall_time_s = time.perf_counter() - started
        mlflow.log_metric("wall_time_s", result.wall_time_s)
        mlflow.end_run()
    result.wall_time_s = time.perf_counter() - started
    return result


def _log_outcome(config, datamodule, module, checkpoint, epoch_metrics, result: TrainResult) -> None:
    mlflow.log_metrics(result.test_metrics)
    if result.best_val_metric is not None:
        mlflow.log_metric(f"best_{config.trainer.monitor}", result.best_val_metric)
    mlflow.set_tag("best_checkpoint", result.best_checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        plots = Path(tmp)
        if epoch_metrics.history:
            mlflow.log_artifact(str(plot_learning_curves(epoch_metrics.history, plots / "learning_curves.png")),
                                "plots")
        if getattr(module, "confusion_matrix", None) is not None:
            mlflow.log_metric("test_samples", float(module.confusion_matrix.sum()))  # all ranks' samples, once each
            matrix_png = plot_confusion_matrix(module.confusion_matrix.numpy(), datamodule.manifest.class_names,
                                               plots / "confusion_matrix_test.png", title=f"{config.name} test")
            mlflow.log_artifact(str(matrix_png), "plots")
    if config.tracking.log_model:
        result.model_uri = log_classifier(module.network, datamodule.input_shape, datamodule.num_classes)
        mlflow.set_tag("stride.model_uri", result.model_uri)
