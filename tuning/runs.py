"""MLflow bookkeeping of a search: the parent run, and finding or closing its trials' child runs.

A child run is found again by its `stride.run_key` tag (search id + trial id), so a
trial restarted after a crash, a resume or a PBT exploit step keeps logging into the run
it started instead of opening a duplicate.
"""

from __future__ import annotations

import time

import mlflow
import yaml
from mlflow.tracking import MlflowClient
from ray import tune

from stride import __version__
from stride.config.schema import StrideConfig
from stride.tracking.contract import (
    KIND_TAG,
    MAX_PARAM_CHARS,
    RUN_KEY_TAG,
    SEARCH_ID_TAG,
    SEARCH_KIND,
    SEARCH_NAME_TAG,
    SEARCH_PARAM_PREFIX,
    SEARCH_SPEC_ARTIFACT,
    SEARCH_SPEC_TAG,
    SPACE_PARAM_PREFIX,
    TRIAL_ID_TAG,
    VERSION_TAG,
)
from stride.tracking.store import ensure_experiment


def trial_run_key(search_id: str, trial_id: str) -> str:
    return f"{search_id}:{trial_id}"


def find_run(uri: str, config: StrideConfig, key: str) -> str | None:
    """The run of a training (a trial, a Ray Train run) by its run key, in the config's experiment."""
    runs = MlflowClient(uri).search_runs([ensure_experiment(uri, config.tracking.experiment)],
                                         filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1)
    return runs[0].info.run_id if runs else None


def start_parent(uri: str, experiment: str, name: str, spec: dict, space: dict[str, str]) -> str:
    """The search's parent run: spec as artifact, space and settings as params."""
    client = MlflowClient(uri)
    run = client.create_run(ensure_experiment(uri, experiment), run_name=name,
                            tags={VERSION_TAG: __version__, KIND_TAG: SEARCH_KIND, SEARCH_SPEC_TAG: spec["name"],
                                  SEARCH_NAME_TAG: name})
    run_id = run.info.run_id
    client.set_tag(run_id, SEARCH_ID_TAG, run_id)
    settings = {k: v for k, v in spec.items() if k not in ("space", "overrides", "scheduler")}
    params = {**{SPACE_PARAM_PREFIX + k: v for k, v in space.items()},
              **{SEARCH_PARAM_PREFIX + k: v for k, v in settings.items()},
              **{f"{SEARCH_PARAM_PREFIX}scheduler.{k}": v for k, v in spec["scheduler"].items()}}
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()])
    client.log_text(run_id, yaml.safe_dump(spec, sort_keys=False), SEARCH_SPEC_ARTIFACT)
    return run_id


def parents_named(uri: str, name: str) -> list[str]:
    """Ids of the parent runs of the searches called `name` in this tracking store, in any experiment."""
    client = MlflowClient(uri)
    experiments, token = [], None
    while True:
        page = client.search_experiments(page_token=token)
        experiments += [e.experiment_id for e in page]
        if not (token := page.token):
            break
    if not experiments:
        return []
    quote = "'" if "'" not in name else '"'  # MLflow's filter strings have no escapes
    named = f"tags.`{KIND_TAG}` = '{SEARCH_KIND}' and tags.`{SEARCH_NAME_TAG}` = {quote}{name}{quote}"
    return [run.info.run_id for run in client.search_runs(experiments, named, max_results=100)]


def reopen_parent(uri: str, run_id: str) -> None:
    MlflowClient(uri).update_run(run_id, status="RUNNING")


def close_children(uri: str, search_id: str, status: str) -> None:
    """Mark the search's child runs still RUNNING (their trial was stopped or interrupted) as `status`."""
    client = MlflowClient(uri)
    parent = client.get_run(search_id)
    for run in client.search_runs([parent.info.experiment_id], max_results=10000,
                                  filter_string=f"tags.`{SEARCH_ID_TAG}` = '{search_id}' and "
                                                "attributes.status = 'RUNNING'"):
        if run.info.run_id != search_id:
            client.set_terminated(run.info.run_id, status)


def child_runs(uri: str, search_id: str) -> dict[str, mlflow.entities.Run]:
    """trial id -> child run."""
    client = MlflowClient(uri)
    parent = client.get_run(search_id)
    runs = client.search_runs([parent.info.experiment_id], max_results=10000,
                              filter_string=f"tags.`{SEARCH_ID_TAG}` = '{search_id}'")
    return {r.data.tags[TRIAL_ID_TAG]: r for r in runs if TRIAL_ID_TAG in r.data.tags}


class CloseStoppedTrialRuns(tune.Callback):
    """Ends a trial's child run when Tune stops or fails the trial.

    ASHA stops a function trial by raising inside `tune.report` and then terminating its
    actor, which may kill the thread before it tells MLflow; the driver closes the run here
    so no child stays RUNNING. A normally finished trial has already ended its run.
    """

    def __init__(self, uri: str, search_id: str, base: StrideConfig):
        self.uri, self.search_id, self.base = uri, search_id, base

    def _close(self, trial, status: str) -> None:
        client = MlflowClient(self.uri)
        run_id = find_run(self.uri, self.base, trial_run_key(self.search_id, trial.trial_id))
        if run_id is None:
            return
        for _ in range(5):  # give a stopping trial a moment to end its run itself
            if client.get_run(run_id).info.status != "RUNNING":
                return
            time.sleep(0.2)
        client.set_terminated(run_id, status)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._close(trial, "KILLED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._close(trial, "FAILED")
