"""What a training records into its open MLflow run while it trains, as Lightning callbacks and a logger.

Metrics go through Lightning's own `MLFlowLogger` bound to the run; `RunRecorder` adds what
Lightning does not know: params (and, for a continued run, the history of those that changed),
the resolved config, the dataset as tags and as an MLflow dataset input, each epoch's time, and
when fitting starts and ends. What a finished training leaves is `stride.tracking.publish`'s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
from mlflow.entities import Dataset, DatasetInput, InputTag, Param
from mlflow.tracking import MlflowClient
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import Logger, MLFlowLogger

from stride.config.loading import config_to_dict, config_to_yaml, flatten
from stride.tracking.contract import (
    CONFIG_ARTIFACT,
    DATASET_CONTEXT_TAG,
    DATASET_DIGEST_CHARS,
    DATASET_NAME_TAG,
    DATASET_PATH_TAG,
    DATASET_SHA256_TAG,
    EPOCH_TIME_METRIC,
    MAX_PARAM_CHARS,
    MAX_PERTURBED_CHARS,
    NUM_PARAMS_PARAM,
    PERTURBED_PREFIX,
    TRAINING_CONTEXT,
)
from stride.tracking.run import MlflowRun
from stride.tracking.store import fluent_tracking_uri

MAX_PARAMS_PER_CALL = 100  # MLflow's limit


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


def dataset_input(path: str, name: str, sha256: str) -> DatasetInput:
    """The dataset as MLflow shows it in the runs table: name, manifest sha256 as digest, source path."""
    dataset = Dataset(name=name, digest=sha256[:DATASET_DIGEST_CHARS], source_type="local",
                      source=json.dumps({"uri": path}))
    return DatasetInput(dataset, tags=[InputTag(DATASET_CONTEXT_TAG, TRAINING_CONTEXT)])


class RunRecorder(pl.Callback):
    """Records a training into `run` (global rank 0 only): `callbacks` and `loggers` go to `train()`."""

    def __init__(self, run: MlflowRun):
        self.run = run
        self._params_logged = dict(run.opened.params)  # a continued run keeps its first values ...
        self._perturbed = {k: v for k, v in run.opened.tags.items() if k.startswith(PERTURBED_PREFIX)}
        self._epoch_started_s = 0.0

    @property
    def callbacks(self) -> list[pl.Callback]:
        return [self, LearningRateMonitor(logging_interval="epoch")]

    @property
    def loggers(self) -> list[Logger]:
        return [RunMetricsLogger(tracking_uri=self.run.uri, run_id=self.run.run_id)]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        params = flatten(config_to_dict(self.run.config))
        params[NUM_PARAMS_PARAM] = sum(p.numel() for p in pl_module.parameters())
        self._log_params({k: str(v)[:MAX_PARAM_CHARS] for k, v in params.items()})
        self._log_dataset(cast(Any, trainer).datamodule)  # set by Lightning at run time; pl.Trainer lacks it
        self.run.client.log_text(self.run.run_id, config_to_yaml(self.run.config), CONFIG_ARTIFACT)

    def _log_params(self, shown: dict[str, str]) -> None:
        client, run_id = self.run.client, self.run.run_id
        fresh = [Param(k, v) for k, v in shown.items() if k not in self._params_logged]
        for start in range(0, len(fresh), MAX_PARAMS_PER_CALL):
            client.log_batch(run_id, params=fresh[start:start + MAX_PARAMS_PER_CALL])
        # ... so values changed since (PBT's explore step) are recorded as tags: first -> ... -> current
        for key, value in shown.items():
            tag = PERTURBED_PREFIX + key
            history = self._perturbed.get(tag, self._params_logged.get(key, value))
            if history.rsplit(" -> ", 1)[-1] != value:
                self._perturbed[tag] = f"{history} -> {value}"
                client.set_tag(run_id, tag, self._perturbed[tag][-MAX_PERTURBED_CHARS:])
        self._params_logged = {**shown, **self._params_logged}

    def _log_dataset(self, datamodule) -> None:
        client, run_id = self.run.client, self.run.run_id
        root = datamodule.root  # a folder, or a dataset location (a folder or an s3:// prefix)
        path = getattr(root, "absolute_uri", None) or str(Path(root).absolute())
        sha = datamodule.dataset_sha256
        for key, value in {DATASET_PATH_TAG: path, DATASET_NAME_TAG: datamodule.manifest.dataset,
                           DATASET_SHA256_TAG: sha}.items():
            client.set_tag(run_id, key, value)
        client.log_inputs(run_id, datasets=[dataset_input(path, datamodule.manifest.dataset, sha)])

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run.mark("fit")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started_s = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning validates before this hook, so the span holds the epoch's validation too: what
        # `stride bench --search` subtracts from a trial's time
        epoch_s = time.perf_counter() - self._epoch_started_s
        self.run.client.log_metric(self.run.run_id, EPOCH_TIME_METRIC, round(epoch_s, 4), step=trainer.global_step)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run.mark("test")
