"""MLflow recording of one training, injected into the training core as a callback and a logger.

    with MlflowRun(uri, config, parent_run_id=search_id) as run:
        outcome = train(config, callbacks=run.callbacks, loggers=[run.logger])

The run is created (or continued, for a restarted trial) explicitly here, with stride's
tags and its parent for nesting. Metrics go through Lightning's own `MLFlowLogger` bound
to that run; this callback adds what Lightning does not know: params, the resolved config,
the dataset as an MLflow dataset input, and after testing the task's plots and the
pickle-free model (with its module's weights, `weights/module.pt`). Leaving the `with` block
ends the run FINISHED, KILLED (interrupted) or FAILED. Only global rank 0 makes one: other DDP
ranks pass no recorder.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.tracking import MlflowClient
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import MLFlowLogger

from stride import __version__
from stride.config.loading import config_to_dict, config_to_yaml, flatten
from stride.config.schema import StrideConfig
from stride.tasks import DataFacts, get_task
from stride.tracking.contract import (ARCHITECTURE_TAG, BEST_CHECKPOINT_TAG, CONFIG_ARTIFACT, DATASET_CONTEXT_TAG,
                                      DATASET_DIGEST_CHARS, DATASET_NAME_TAG, DATASET_PATH_TAG, DATASET_SHA256_TAG,
                                      DEFERRED_MODEL_TAG, ENDED_BY_TAG, EPOCH_TIME_METRIC, GIT_COMMIT_TAG, HOST_TAG,
                                      MAX_PARAM_CHARS, MAX_PERTURBED_CHARS, MODEL_URI_TAG, MODULE_ARTIFACT,
                                      NUM_PARAMS_PARAM, PARENT_TAG, PERTURBED_PREFIX, PHASES, PID_TAG, PLOTS_FOLDER,
                                      PROCESS_STARTED_TAG, RECIPE_TAG, TASK_TAG, TRAINING_CONTEXT, VERSION_TAG,
                                      WALL_TIME_METRIC, best_metric, phase_time_metric)
from stride.tracking.models import log_exported
from stride.tracking.store import ensure_experiment, fluent_tracking_uri
from stride.training.history import EpochHistory


def process_tags() -> dict[str, str]:
    import psutil

    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            PROCESS_STARTED_TAG: f"{psutil.Process().create_time():.3f}"}


def _alive(pid: int, started: str) -> bool:
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.3f}" == started  # not a later process with the same pid
    except psutil.Error:
        return False


def fail_dead_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark FAILED the RUNNING runs of `experiment_id` whose process on this host is gone (`kill -9`, OOM,
    power loss), so dashboards and promotion see no ghost runs. Runs of other hosts are left alone."""
    host = socket.gethostname()
    ended = []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING' and "
                                  f"tags.`{HOST_TAG}` = '{host}'", max_results=1000):
        tags = run.data.tags
        if PID_TAG in tags and not _alive(int(tags[PID_TAG]), tags.get(PROCESS_STARTED_TAG, "")):
            client.set_tag(run.info.run_id, ENDED_BY_TAG,
                           f"a later stride command: process {tags[PID_TAG]} on {host} ended without closing the run")
            client.set_terminated(run.info.run_id, "FAILED")
            ended.append(run.info.run_id)
    return ended


class RunMetricsLogger(MLFlowLogger):
    """Lightning's MLflow logger for metrics, minus its ending of the run when fitting stops:
    the run outlives the fit (testing, plots and the model come after)."""

    @property
    def experiment(self) -> MlflowClient:
        if self._initialized:
            return self._mlflow_client
        with fluent_tracking_uri(self._tracking_uri):  # Lightning would set it for good on first use
            return super().experiment

    def finalize(self, status: str = "success") -> None:
        pass


def git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def dataset_input(path: str, name: str, sha256: str) -> DatasetInput:
    """The dataset as MLflow shows it in the runs table: name, manifest sha256 as digest, source path."""
    digest = sha256[:DATASET_DIGEST_CHARS]
    dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": path}))
    return DatasetInput(dataset, tags=[InputTag(DATASET_CONTEXT_TAG, TRAINING_CONTEXT)])


class MlflowRun(EpochHistory):
    def __init__(self, uri: str, config: StrideConfig, *, run_name: str | None = None,
                 parent_run_id: str | None = None, tags: dict[str, str] | None = None, run_id: str | None = None):
        super().__init__()
        self.uri, self.config = uri, config
        self.client = MlflowClient(uri)
        self.experiment_id = ensure_experiment(uri, config.tracking.experiment)
        if run_id is None:
            all_tags = {VERSION_TAG: __version__, RECIPE_TAG: config.name, TASK_TAG: config.task,
                        ARCHITECTURE_TAG: config.model.architecture, **config.tracking.tags, **(tags or {})}
            if commit := git_commit():
                all_tags[GIT_COMMIT_TAG] = commit
            if parent_run_id:
                all_tags[PARENT_TAG] = parent_run_id
            run = self.client.create_run(self.experiment_id, run_name=run_name or config.tracking.run_name
                                         or config.name, tags={**all_tags, **process_tags()})
        else:  # a restarted trial continues its run, from another process
            run = self.client.get_run(run_id)
            for key, value in process_tags().items():
                self.client.set_tag(run_id, key, value)
            self.client.update_run(run_id, status="RUNNING")
        self.run_id: str = run.info.run_id
        self._params_logged = dict(run.data.params)  # a continued run keeps its first values ...
        self._perturbed = {k: v for k, v in run.data.tags.items() if k.startswith(PERTURBED_PREFIX)}
        self.model_uri: str | None = None
        self._ended = False
        self._started_s = time.perf_counter()
        self._clock: dict[str, float] = {}  # phase -> when it began (perf_counter), for the time_*_s metrics

    # -- what the core is given ----------------------------------------------------------------
    @property
    def logger(self) -> MLFlowLogger:
        return RunMetricsLogger(tracking_uri=self.uri, run_id=self.run_id)

    @property
    def callbacks(self) -> list[pl.Callback]:
        return [self, LearningRateMonitor(logging_interval="epoch")]

    # -- Lightning hooks -------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        params = flatten(config_to_dict(self.config))
        params[NUM_PARAMS_PARAM] = sum(p.numel() for p in pl_module.parameters())
        shown = {k: str(v)[:MAX_PARAM_CHARS] for k, v in params.items()}
        fresh = [Param(k, v) for k, v in shown.items() if k not in self._params_logged]
        for start in range(0, len(fresh), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=fresh[start:start + 100])
        # ... so values changed since (PBT's explore step) are recorded as tags: first -> ... -> current
        for key, value in shown.items():
            tag = PERTURBED_PREFIX + key
            history = self._perturbed.get(tag, self._params_logged.get(key, value))
            if history.rsplit(" -> ", 1)[-1] != value:
                self._perturbed[tag] = f"{history} -> {value}"
                self.client.set_tag(self.run_id, tag, self._perturbed[tag][-MAX_PERTURBED_CHARS:])
        self._params_logged = {**shown, **self._params_logged}
        path, sha = str(Path(datamodule.root).absolute()), datamodule.dataset_sha256
        for key, value in {DATASET_PATH_TAG: path, DATASET_NAME_TAG: datamodule.manifest.dataset,
                           DATASET_SHA256_TAG: sha}.items():
            self.client.set_tag(self.run_id, key, value)
        self.client.log_text(self.run_id, config_to_yaml(self.config), CONFIG_ARTIFACT)
        self.client.log_inputs(self.run_id, datasets=[dataset_input(path, datamodule.manifest.dataset, sha)])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # what `stride bench --search` subtracts from a trial's time
        self.client.log_metric(self.run_id, EPOCH_TIME_METRIC, round(self.epoch_times_s[-1], 4),
                               step=trainer.global_step)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._clock.setdefault("fit", time.perf_counter())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._clock["test"] = time.perf_counter()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After the best checkpoint was tested (the module holds its weights): plots and the model."""
        self._clock["logging"] = time.perf_counter()
        checkpoint = trainer.checkpoint_callback
        monitor = self.config.trainer.monitor
        if checkpoint is not None and checkpoint.best_model_score is not None:
            self.client.log_metric(self.run_id, best_metric(monitor), float(checkpoint.best_model_score))
            self.client.set_tag(self.run_id, BEST_CHECKPOINT_TAG, checkpoint.best_model_path)
        task = get_task(self.config.task)
        facts = DataFacts.of(trainer.datamodule)
        with tempfile.TemporaryDirectory() as tmp:
            for png in task.figures(pl_module, facts, self.history, Path(tmp), self.config.name):
                self.client.log_artifact(self.run_id, str(png), PLOTS_FOLDER)
        log_model = self.config.tracking.log_model
        if not log_model:
            return
        self._log_module(pl_module)
        if task.labels_artifact:  # what the outputs mean, beside the model (a captioner's vocabulary)
            self.client.log_dict(self.run_id, {"words": list(facts.class_names)}, task.labels_artifact)
        if log_model == "deferred":  # exported from those weights if the run is ever promoted
            self.client.set_tag(self.run_id, DEFERRED_MODEL_TAG, MODULE_ARTIFACT)
        else:
            self.model_uri = log_exported(task.export(pl_module, facts), self.uri, self.run_id)
            self.client.set_tag(self.run_id, MODEL_URI_TAG, self.model_uri)

    def _log_module(self, pl_module: pl.LightningModule) -> None:
        if "stride" not in pl_module.hparams:
            return
        folder, name = MODULE_ARTIFACT.rsplit("/", 1)
        state = {key: value.detach().cpu() for key, value in pl_module.state_dict().items()}
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({"state_dict": state, "hyper_parameters": {"stride": pl_module.hparams["stride"]}},
                       Path(tmp) / name)
            self.client.log_artifact(self.run_id, str(Path(tmp) / name), folder)

    def phase_times(self, now: float) -> dict[str, float]:
        """Where the run's wall time went: `time_setup_s` (run created to fit start: trainer, data),
        `time_fit_s` (training and validation), `time_test_s`, `time_logging_s` (plots, the model)."""
        marks = [(PHASES[0], self._started_s), *((p, self._clock[p]) for p in PHASES[1:] if p in self._clock),
                 ("end", now)]
        times = {phase_time_metric(phase): later - began for (phase, began), (_, later) in zip(marks, marks[1:])}
        return {WALL_TIME_METRIC: now - self._started_s, **times}

    # -- the run's end ---------------------------------------------------------------------------
    def end(self, status: str = "FINISHED") -> None:
        if self._ended:
            return
        self._ended = True
        if status == "FINISHED":
            now = time.perf_counter()
            self.client.log_batch(self.run_id, metrics=[Metric(key, round(value, 3), int(time.time() * 1000), 0)
                                                        for key, value in self.phase_times(now).items()])
        self.client.set_terminated(self.run_id, status)

    def __enter__(self) -> "MlflowRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
            return
        # stopped (Ctrl-C, a scheduler ending a trial) is not failed
        stopped = issubclass(exc_type, (KeyboardInterrupt, SystemExit))
        try:
            self.end("KILLED" if stopped else "FAILED")
        except Exception:  # the tracking server may be what failed; the original error matters more
            pass
