"""Multi-worker (DDP) training through Ray Train: `stride train --workers N` and N-worker trials.

Every worker runs stride's ordinary `train()`; Lightning uses Ray's DDP strategy and
cluster environment, the datamodule splits shards by the torch.distributed rank, and only
rank 0 talks to MLflow. A restarted worker group (Ray Train's FailureConfig) continues
from the last reported checkpoint and the same MLflow run.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

import pytorch_lightning as pl

from stride.config.schema import StrideConfig
from stride.tuning.cluster import TrialResources
from stride.tuning.reporting import CHECKPOINT_FILE, RUN_ID_KEY, ReportEpochs
from stride.tuning.runs import RUN_KEY_TAG, experiment_id, find_run


@dataclass
class DistributedRun:
    """Everything the workers need; travels to them as the train loop config."""

    config: StrideConfig
    tracking_uri: str
    run_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    parent_run_id: str | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)
    extra_callbacks: Sequence[pl.Callback] = ()
    use_gpu: bool = False


def _report_to_train(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
    import ray.train

    checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    ray.train.report(metrics, checkpoint=checkpoint)


def train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: stride's train() under Ray's DDP, then a final report with the test metrics."""
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment

    from stride.pipelines.train import train

    job: DistributedRun = loop_config["job"]
    rank = ray.train.get_context().get_world_rank()
    config = job.config
    run_id = None
    if rank == 0:
        run_id = find_run_for(job)
    checkpoint = ray.train.get_checkpoint()
    with contextlib.ExitStack() as stack:
        ckpt_path = None
        if checkpoint is not None:
            ckpt_path = os.path.join(stack.enter_context(checkpoint.as_directory()), CHECKPOINT_FILE)
        result = train(config, tracking_uri=job.tracking_uri, parent_run_id=job.parent_run_id,
                       extra_tags={**job.extra_tags, RUN_KEY_TAG: job.run_key},
                       extra_callbacks=[ReportEpochs(_report_to_train), *job.extra_callbacks],
                       trainer_overrides={"strategy": RayDDPStrategy(), "plugins": [RayLightningEnvironment()],
                                          "devices": "auto", "accelerator": "gpu" if job.use_gpu else "cpu"},
                       global_rank=rank, run_id=run_id, ckpt_path=ckpt_path)
    ray.train.report(final_metrics(config, result))


def find_run_for(job: DistributedRun) -> str | None:
    import mlflow

    return find_run(mlflow.MlflowClient(job.tracking_uri),
                    experiment_id(job.tracking_uri, job.config.tracking.experiment), job.run_key)


def final_metrics(config: StrideConfig, result) -> dict[str, Any]:
    """What a finished training reports last: its final epoch's numbers plus the test metrics."""
    last_epoch = dict(result.history[-1]) if result.history else {}
    last_epoch.pop("epoch", None)
    metrics: dict[str, Any] = {**last_epoch, **result.test_metrics, "epoch": config.trainer.max_epochs or 0}
    if result.best_val_metric is not None:
        metrics[f"best_{config.trainer.monitor}"] = result.best_val_metric
    if result.run_id:
        metrics[RUN_ID_KEY] = result.run_id
    return metrics


def fit_with_ray_train(job: DistributedRun, resources: TrialResources, *, storage_path: str, name: str,
                       max_failures: int = 1, keep_checkpoints: int = 2, report_to_tune: bool = False
                       ) -> dict[str, Any]:
    """Launch the Ray Train run (from a driver or a Tune trial) and return rank 0's last report."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    job.use_gpu = resources.gpus > 0
    per_worker = {"CPU": resources.cpus_per_worker}
    if job.use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    callbacks = []
    if report_to_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    t = job.config.trainer
    trainer = TorchTrainer(
        train_worker, train_loop_config={"job": job},
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=job.use_gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=name, storage_path=storage_path, callbacks=callbacks,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints,
                                                                checkpoint_score_attribute=t.monitor,
                                                                checkpoint_score_order=t.monitor_mode)))
    return dict(trainer.fit().metrics or {})


def storage_join(storage: str, *parts: str) -> str:
    """Join under a local folder or a URI (s3://, gs://) alike."""
    return posixpath.join(storage, *parts)


def train_with_ray(config: StrideConfig, *, workers: int, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                   tracking_uri: str | None = None, address: str | None = None, storage: str = "ray_results",
                   max_failures: int = 1) -> dict[str, Any]:
    """`stride train --workers N`: one DDP training over N Ray Train workers; returns rank 0's final metrics."""
    import time
    from pathlib import Path

    from stride.tracking.store import check_reachable, resolve_tracking_uri
    from stride.tuning.cluster import connect, max_concurrency

    uri = resolve_tracking_uri(tracking_uri or config.tracking.uri)
    check_reachable(uri)
    config.trainer.checkpoint_dir = str(Path(config.trainer.checkpoint_dir).absolute())
    if "://" not in config.data.path:
        config.data.path = str(Path(config.data.path).absolute())
    resources = TrialResources(cpus_per_worker * workers, gpus_per_worker * workers, workers)
    owns_ray = connect(address, state_api=True)
    try:
        max_concurrency(resources, None)
        storage_path = storage if "://" in storage else str(Path(storage).absolute())
        name = f"{config.name}-train-{time.strftime('%Y%m%d-%H%M%S')}"
        return fit_with_ray_train(DistributedRun(config, uri), resources, storage_path=storage_path, name=name,
                                  max_failures=max_failures)
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
