"""Multi-worker (DDP) training through Ray Train: `stride train --workers N` and N-worker trials.

Every worker runs `tuning.job.train_in_ray` (the training core under Ray's DDP strategy and cluster
environment); the datamodule splits shards by the torch.distributed rank, and only rank 0
talks to MLflow. A restarted worker group (Ray Train's FailureConfig) continues from the
last reported checkpoint and the same MLflow run.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlflow.tracking import MlflowClient

from stride.config.schema import StrideConfig
from stride.errors import StrideError
from stride.names import safe_filename
from stride.tracking.store import check_reachable, resolve_tracking_uri
from stride.training import open_datamodule
from stride.tuning.cluster import TrialResources, max_concurrency, ray_session
from stride.tuning.job import TrainingJob, train_in_ray
from stride.tuning.runs import find_run


def train_worker(loop_config: dict[str, Any]) -> None:
    train_in_ray(loop_config["job"], distributed=True)


def fit_with_ray_train(job: TrainingJob, resources: TrialResources, *, storage_path: str, name: str,
                       max_failures: int = 1, keep_checkpoints: int = 2, report_to_tune: bool = False) -> None:
    """Launch the Ray Train run (from a driver or a Tune trial) and wait for it."""
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
                                     resources_per_worker=per_worker, placement_strategy=t.placement_strategy),
        # ray.train's RunConfig is typed as Train v1's (Tune callbacks); at run time it is Train v2's, which takes
        # UserCallbacks such as TuneReportCallback
        run_config=RunConfig(name=name, storage_path=storage_path, callbacks=callbacks,  # type: ignore[arg-type]
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints,
                                                                checkpoint_score_attribute=t.monitor,
                                                                checkpoint_score_order=t.monitor_mode)))
    trainer.fit()


def storage_join(storage: str, *parts: str) -> str:
    """Join under a local folder or a URI (s3://, gs://) alike."""
    return posixpath.join(storage, *parts)


def storage_root(storage: str) -> str:
    """A local folder made absolute, or a URI (s3://bucket/prefix, gs://...) as given, unless it holds credentials.

    pyarrow takes `s3://KEY:SECRET@bucket/...` as credentials; Ray would pickle them into the search state (its
    filesystem object travels with every checkpoint), and stride prints and records the storage. Credentials come
    from the standard chain instead (environment, profile, instance role)."""
    if "://" not in storage:
        return str(Path(storage).absolute())
    parts = urlsplit(storage)
    if parts.username or parts.password:
        shown = urlunsplit(parts._replace(netloc=f"***@{parts.hostname or ''}"))
        raise StrideError(f"storage {shown}: the URI carries credentials, which would be written into the search state "
                          "and printed; remove them and give them through the environment (AWS_ACCESS_KEY_ID, "
                          "AWS_SECRET_ACCESS_KEY), a profile (AWS_PROFILE) or the node's instance role")
    return storage


@dataclass
class DistributedResult:
    tracking_uri: str
    experiment_id: str
    run_id: str | None
    test_metrics: dict[str, float]


def train_with_ray(config: StrideConfig, *, workers: int, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                   tracking_uri: str | None = None, address: str | None = None, storage: str = "ray_results",
                   max_failures: int = 1) -> DistributedResult:
    """`stride train --workers N`: one DDP training over N Ray Train workers, recorded as one MLflow run."""
    uri = resolve_tracking_uri(tracking_uri or config.tracking.uri)
    check_reachable(uri)
    config.trainer.checkpoint_dir = str(Path(config.trainer.checkpoint_dir).absolute())
    if "://" not in config.data.path:
        config.data.path = str(Path(config.data.path).absolute())
    open_datamodule(config)  # the driver hashes every shard once; the workers check sizes
    resources = TrialResources(cpus_per_worker * workers, gpus_per_worker * workers, workers)
    job = TrainingJob(config, uri)
    with ray_session(address, state_api=True):
        max_concurrency(resources, None)
        storage_path = storage_root(storage)
        fit_with_ray_train(job, resources, storage_path=storage_path, max_failures=max_failures,
                           name=f"{safe_filename(config.name)}-train-{time.strftime('%Y%m%d-%H%M%S')}")
    run_id = find_run(uri, config, job.run_key)
    run = MlflowClient(uri).get_run(run_id) if run_id else None
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("test_")} if run else {}
    return DistributedResult(uri, run.info.experiment_id if run else "", run_id, metrics)
