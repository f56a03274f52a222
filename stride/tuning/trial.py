"""One trial: sampled values -> a validated config -> stride's `train()` as a nested MLflow run.

A trial is a plain function of the sampled values (Ray Tune's function API). With one
worker it trains in the trial's own process; with N workers it drives a Ray Train run.
A restarted trial (worker crash, resume, PBT) continues from Tune's latest checkpoint
and in the same child run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import mlflow
import pytorch_lightning as pl
from ray import tune

from stride.config.schema import StrideConfig
from stride.tuning.cluster import TrialResources
from stride.tuning.distributed import DistributedRun, final_metrics, fit_with_ray_train, storage_join
from stride.tuning.pbt import ApplyTrialOptim
from stride.tuning.reporting import CHECKPOINT_FILE, ReportEpochs
from stride.tuning.runs import RUN_KEY_TAG, SEARCH_ID_TAG, TRIAL_ID_TAG, experiment_id, find_run, trial_run_key
from stride.tuning.spec import ResolvedSearch


@dataclass
class TrialSetup:
    """What every trial shares; handed to trials with `tune.with_parameters`."""

    search: ResolvedSearch
    tracking_uri: str
    search_id: str
    resources: TrialResources
    storage_path: str
    name: str
    extra_callbacks: Sequence[pl.Callback] = ()


def _report_to_tune(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)


def trial_config(setup: TrialSetup, params: dict[str, Any], trial_id: str) -> StrideConfig:
    config = setup.search.config_for(params, f"trial {trial_id}")
    config.trainer.enable_progress_bar = False
    # relative checkpoint folders land in the trial's own working folder (Tune changes into it)
    config.trainer.checkpoint_dir = str(Path(config.trainer.checkpoint_dir).absolute())
    return config


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    trial_id = tune.get_context().get_trial_id()
    config = trial_config(setup, params, trial_id)
    key = trial_run_key(setup.search_id, trial_id)
    tags = {SEARCH_ID_TAG: setup.search_id, TRIAL_ID_TAG: trial_id}
    callbacks = list(setup.extra_callbacks)
    if setup.search.spec.scheduler.name == "pbt":
        callbacks.append(ApplyTrialOptim(config.optim))
    if setup.resources.workers > 1:
        job = DistributedRun(config, setup.tracking_uri, run_key=key, parent_run_id=setup.search_id,
                             extra_tags=tags, extra_callbacks=callbacks)
        fit_with_ray_train(job, setup.resources, storage_path=storage_join(setup.storage_path, setup.name, "train"),
                           name=trial_id, max_failures=setup.search.spec.max_failures,
                           keep_checkpoints=setup.search.spec.keep_checkpoints, report_to_tune=True)
        return
    from stride.pipelines.train import train

    run_id = find_run(mlflow.MlflowClient(setup.tracking_uri),
                      experiment_id(setup.tracking_uri, config.tracking.experiment), key)
    checkpoint = tune.get_checkpoint()
    with contextlib.ExitStack() as stack:
        ckpt_path = None
        if checkpoint is not None:
            ckpt_path = os.path.join(stack.enter_context(checkpoint.as_directory()), CHECKPOINT_FILE)
        result = train(config, tracking_uri=setup.tracking_uri, parent_run_id=setup.search_id,
                       extra_tags={**tags, RUN_KEY_TAG: key},
                       extra_callbacks=[ReportEpochs(_report_to_tune), *callbacks], run_id=run_id,
                       ckpt_path=ckpt_path)
    tune.report(final_metrics(config, result))
