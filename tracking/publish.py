"""What a finished training leaves in its MLflow run, published by the launcher once `train()` returned.

The outcome holds the module as tested (the best checkpoint's weights): its score and checkpoint,
the task's figures, its weights as a weights-only stride checkpoint (`weights/module.pt`), the
task's labels file, and the pickle-free pt2 model, or only the tag that defers its export to the
promotion (`tracking.log_model: deferred`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytorch_lightning as pl
import torch

from stride.serving import get_serving
from stride.tasks import get_task
from stride.tracking.contract import (
    BEST_CHECKPOINT_TAG,
    DEFERRED_MODEL_TAG,
    MODEL_URI_TAG,
    MODULE_ARTIFACT,
    MODULE_SHA256_TAG,
    PLOTS_FOLDER,
    best_metric,
)
from stride.tracking.digests import file_sha256
from stride.tracking.models import log_exported
from stride.tracking.run import MlflowRun
from stride.training import TrainOutcome


def publish_training(run: MlflowRun, outcome: TrainOutcome) -> str | None:
    """Log what `outcome` leaves into `run`; return the logged model's URI (None: no model exported now)."""
    run.mark("logging")
    config, client = run.config, run.client
    if outcome.best_score is not None:
        assert config.trainer.monitor is not None, "filled in by config validation"
        client.log_metric(run.run_id, best_metric(config.trainer.monitor), outcome.best_score)
        client.set_tag(run.run_id, BEST_CHECKPOINT_TAG, outcome.best_checkpoint)
    task = get_task(config.task)
    with tempfile.TemporaryDirectory() as tmp:
        for png in task.figures(outcome.module, outcome.facts, outcome.history, Path(tmp), config.name):
            client.log_artifact(run.run_id, str(png), PLOTS_FOLDER)
    if not config.tracking.log_model:
        return None
    log_module(run, outcome.module)
    serving = get_serving(config.task)
    if serving.labels_artifact:  # what the outputs mean, beside the model (a captioner's vocabulary)
        client.log_dict(run.run_id, {"words": list(outcome.facts.class_names)}, serving.labels_artifact)
    if config.tracking.log_model == "deferred":  # exported from those weights if the run is ever promoted
        client.set_tag(run.run_id, DEFERRED_MODEL_TAG, MODULE_ARTIFACT)
        return None
    model_uri = log_exported(serving.export(outcome.module, outcome.facts), run.uri, run.run_id)
    client.set_tag(run.run_id, MODEL_URI_TAG, model_uri)
    return model_uri


def log_module(run: MlflowRun, module: pl.LightningModule) -> None:
    """The module's weights and the description that rebuilds it, read back with weights_only=True."""
    if "stride" not in module.hparams:
        return
    folder, name = MODULE_ARTIFACT.rsplit("/", 1)
    state = {key: value.detach().cpu() for key, value in module.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        torch.save({"state_dict": state, "hyper_parameters": {"stride": module.hparams["stride"]}}, path)
        run.client.log_artifact(run.run_id, str(path), folder)
        run.client.set_tag(run.run_id, MODULE_SHA256_TAG, file_sha256(path))  # readers refuse a changed copy
