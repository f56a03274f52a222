"""One training inside Ray, the body shared by single-process Tune trials and Ray Train workers.

It is the training core plus Ray's own Lightning callbacks (Tune's report callback in a
trial, `RayTrainReportCallback` in a worker) and, on rank 0, the MLflow recorder; rank 0 then
publishes the tested model into the run. A restarted trial or worker group (crash, resume, PBT)
continues from Ray's latest checkpoint and in the same MLflow run, found again by its run key tag.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl

from stride.config.schema import StrideConfig
from stride.tracking.contract import RESUMED_FROM_TAG, RUN_KEY_TAG
from stride.tracking.publish import publish_training
from stride.tracking.recorder import RunRecorder
from stride.tracking.run import MlflowRun
from stride.training import Launch, train
from stride.tuning.integrity import refuse_unloadable
from stride.tuning.runs import find_run

TUNE_CHECKPOINT_FILE = "checkpoint.ckpt"


@dataclass
class TrainingJob:
    """Everything one training inside Ray needs; travels to the trial or to every Train worker."""

    config: StrideConfig
    tracking_uri: str
    run_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    run_name: str | None = None
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    extra_callbacks: Sequence[pl.Callback] = ()
    use_gpu: bool = False


def train_in_ray(job: TrainingJob, *, distributed: bool) -> None:
    """The body of a single-process trial (`distributed=False`) or of one Ray Train worker."""
    if distributed:
        import ray.train
        from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback, prepare_trainer

        rank = ray.train.get_context().get_world_rank()
        report: pl.Callback = RayTrainReportCallback()
        checkpoint, filename = ray.train.get_checkpoint(), RayTrainReportCallback.CHECKPOINT_NAME
        launch = Launch(strategy=RayDDPStrategy(), plugins=[RayLightningEnvironment()], devices="auto",
                        accelerator="gpu" if job.use_gpu else "cpu", prepare=prepare_trainer)
    else:
        from ray import tune
        from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

        rank = 0
        # after each epoch's validation: the epoch's metrics and the full trainer state, so a restarted
        # trial resumes exactly (read back with weights_only=True by the core)
        report = TuneReportCheckpointCallback(filename=TUNE_CHECKPOINT_FILE, on="train_epoch_end")
        checkpoint, filename = tune.get_checkpoint(), TUNE_CHECKPOINT_FILE
        launch = Launch()
    launch.verify_checksums = False  # the search's driver hashed the shards; sizes are still checked
    with contextlib.ExitStack() as stack:
        if checkpoint is not None:
            launch.resume_checkpoint = os.path.join(stack.enter_context(checkpoint.as_directory()), filename)
            refuse_unloadable(launch.resume_checkpoint)  # before its run is reopened
        callbacks, loggers = [report, *job.extra_callbacks], []
        run = None
        if rank == 0:
            run = stack.enter_context(MlflowRun(
                job.tracking_uri, job.config, run_name=job.run_name, parent_run_id=job.parent_run_id,
                tags={**job.tags, RUN_KEY_TAG: job.run_key},
                run_id=find_run(job.tracking_uri, job.config, job.run_key)))
            recorder = RunRecorder(run)
            callbacks, loggers = [*recorder.callbacks, *callbacks], recorder.loggers
            launch.checkpoint_dir = str(Path(job.config.trainer.checkpoint_dir) / run.run_id)
            if checkpoint is not None:  # its own (a restart) or, after a PBT exploit, another trial's
                run.client.set_tag(run.run_id, RESUMED_FROM_TAG, checkpoint.path)
        outcome = train(job.config, callbacks=callbacks, loggers=loggers, launch=launch)
        if run is not None:
            publish_training(run, outcome)


