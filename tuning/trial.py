"""The Tune trial: a plain function of the sampled values (Ray Tune's function API).

With one worker it trains in the trial's own process; with N it drives a Ray Train run
whose workers run the same body (`tuning.job.train_in_ray`) under Ray's DDP strategy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from stride.config.schema import StrideConfig
from stride.hardware import this_machine
from stride.tracking.contract import SEARCH_ID_TAG, STUDY_HARDWARE_TAG, STUDY_ROW_TAG, TRIAL_ID_TAG
from stride.tuning.cluster import TrialResources
from stride.tuning.distributed import fit_with_ray_train, storage_join
from stride.tuning.job import TrainingJob, train_in_ray
from stride.tuning.pbt import ApplyTrialOptim
from stride.tuning.runs import find_run, trial_run_key
from stride.tuning.spec import ROW_KEY, ResolvedSearch


@dataclass
class TrialSetup:
    """What every trial of a search shares; handed to trials with `tune.with_parameters`."""

    search: ResolvedSearch
    tracking_uri: str
    search_id: str
    resources: TrialResources
    storage_path: str
    name: str
    extra_callbacks: Sequence[pl.Callback] = ()


def trial_config(setup: TrialSetup, params: dict[str, Any], trial_id: str) -> StrideConfig:
    config = setup.search.config_for(params, f"trial {trial_id}")
    config.trainer.enable_progress_bar = False
    if setup.search.spec.trial_models == "deferred" and config.tracking.log_model is True:
        config.tracking.log_model = "deferred"  # exported when promoted: saves most of a trial's logging time
    # relative checkpoint folders land in the trial's own working folder (Tune changes into it)
    config.trainer.checkpoint_dir = str(Path(config.trainer.checkpoint_dir).absolute())
    return config


def study_row_tag(params: dict[str, Any]) -> dict[str, str]:
    """A study's trial names its row (tuning.study), by which the report groups runs, and its devices."""
    if ROW_KEY not in params:
        return {}
    # the devices this trial trains on (Ray shows a trial only its own GPUs), for the study's report
    return {STUDY_ROW_TAG: str(params[ROW_KEY]), STUDY_HARDWARE_TAG: this_machine()}


def trial_run_name(recipe: str, params: dict[str, Any]) -> str:
    """What tells trials apart in the runs table, e.g. `digits-cnn channels=32 lr=0.022`."""
    def shown(value: Any) -> str:
        if isinstance(value, float) and math.isfinite(value) and value != 0:
            return f"{value:.2g}"
        return str(value)

    return " ".join([recipe, *(f"{key.rsplit('.', 1)[-1]}={shown(value)}" for key, value in sorted(params.items()))])


def finished_run(job: TrainingJob):
    """The trial's MLflow run if an earlier attempt already finished it, else None."""
    from mlflow.tracking import MlflowClient

    run_id = find_run(job.tracking_uri, job.config, job.run_key)
    run = MlflowClient(job.tracking_uri).get_run(run_id) if run_id else None
    return run if run is not None and run.info.status == "FINISHED" else None


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """One trial, with one worker or many."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    config = trial_config(setup, params, trial_id)
    callbacks = list(setup.extra_callbacks)
    if setup.search.spec.scheduler.name == "pbt":
        callbacks.append(ApplyTrialOptim(config.optim))
    job = TrainingJob(config, setup.tracking_uri, run_key=trial_run_key(setup.search_id, trial_id),
                      run_name=trial_run_name(config.name, params), parent_run_id=setup.search_id,
                      tags={SEARCH_ID_TAG: setup.search_id, TRIAL_ID_TAG: trial_id, **study_row_tag(params)},
                      extra_callbacks=callbacks)
    if finished := finished_run(job):
        # Tune lost the news that this trial finished (its driver was killed before saving its state):
        # report what the run recorded instead of training, testing and logging it a second time
        tune.report({k: v for k, v in finished.data.metrics.items()})
        return
    if setup.resources.workers == 1:
        train_in_ray(job, distributed=False)
        return
    fit_with_ray_train(job, setup.resources, storage_path=storage_join(setup.storage_path, setup.name, "train"),
                       name=trial_id, max_failures=setup.search.spec.max_failures,
                       keep_checkpoints=setup.search.spec.keep_checkpoints, report_to_tune=True)
