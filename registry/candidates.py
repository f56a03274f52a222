"""Choosing the run to promote: the best finished run with the metric and a logged model."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from stride.errors import StrideError
from stride.tracking.contract import MODEL_URI_TAG, PARENT_TAG, SEARCH_ID_TAG, TASK_TAG, best_metric
from stride.tracking.deferred import has_model
from stride.tracking.run import fail_dead_runs


@dataclass
class Candidate:
    run: Run
    metric_key: str  # the key actually compared, e.g. best_val_acc
    value: float
    how: str  # human-readable: which value of which metric
    considered: int  # runs compared

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def model_uri(self) -> str:
        """Its logged model (`stride.tracking.deferred.export_deferred_model` first, for a weights-only run)."""
        return self.run.data.tags[MODEL_URI_TAG]


def _all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str = "") -> list[Run]:
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def runs_of_experiment(client: MlflowClient, name: str) -> tuple[list[Run], str]:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments())
        raise StrideError(f"no experiment named {name!r} (experiments: {', '.join(known) or 'none'})")
    fail_dead_runs(client, experiment.experiment_id)
    return _all_runs(client, [experiment.experiment_id]), f"experiment {name!r}"


def runs_of_search(client: MlflowClient, search_id: str) -> tuple[list[Run], str]:
    """Trials of one search: tagged with its id, or (older searches) nested under it."""
    try:
        parent = client.get_run(search_id)
    except MlflowException:
        raise StrideError(f"--search {search_id}: no such run (give the search's parent run id)") from None
    ids = [parent.info.experiment_id]
    fail_dead_runs(client, parent.info.experiment_id)
    runs = _all_runs(client, ids, f"tags.`{SEARCH_ID_TAG}` = '{search_id}'")
    if not runs:
        runs = _all_runs(client, ids, f"tags.`{PARENT_TAG}` = '{search_id}'")
    return [r for r in runs if r.info.run_id != search_id], f"search {search_id}"


def comparison_key(run: Run, metric: str) -> str | None:
    """`best_<metric>` where training recorded it (the checkpoint that was kept), else `metric` itself."""
    for key in (best_metric(metric), metric):
        if key in run.data.metrics and math.isfinite(run.data.metrics[key]):
            return key
    return None


def select_best(runs: list[Run], metric: str, mode: str, where: str) -> Candidate:
    if mode not in ("max", "min"):
        raise StrideError(f"--mode must be max or min, got {mode!r}")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if not finished:
        states = sorted({r.info.status for r in runs})
        raise StrideError(f"{where} has no finished run ({len(runs)} run(s){': ' + ', '.join(states) if runs else ''})")
    with_metric = [(r, key) for r in finished if (key := comparison_key(r, metric))]
    if not with_metric:
        logged = sorted({k for r in finished for k in r.data.metrics})
        raise StrideError(f"no finished run in {where} logged metric {metric!r} (metrics logged: "
                          f"{', '.join(logged) or 'none'})")
    with_model = [(r, key) for r, key in with_metric if has_model(r.data.tags)]
    if not with_model:
        ids = ", ".join(r.info.run_id for r, _ in with_metric[:5])
        raise StrideError(f"no run in {where} with metric {metric!r} has a logged model (tag {MODEL_URI_TAG}; "
                          f"runs: {ids}); train with tracking.log_model=true")
    sign = 1 if mode == "max" else -1
    run, key = max(with_model, key=lambda item: (sign * item[0].data.metrics[item[1]], -item[0].info.start_time))
    value = run.data.metrics[key]
    how = f"{'highest' if mode == 'max' else 'lowest'} {key} " + (
        "(best epoch)" if key != metric else "(last logged value)")
    return Candidate(run, key, value, how, len(with_model))


def run_as_candidate(client: MlflowClient, run_id: str, metric: str | None) -> Candidate:
    """An explicitly named run (`--run`), checked like a selected one; `metric` None: its task's validation
    quality (val_acc, val_ap, ...)."""
    from stride.tasks import get_task

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise StrideError(f"--run {run_id}: no such run") from None
    metric = metric or f"val_{get_task(run.data.tags.get(TASK_TAG, 'classification')).quality}"
    if run.info.status != "FINISHED":
        raise StrideError(f"run {run_id} is {run.info.status}, not FINISHED")
    if not has_model(run.data.tags):
        raise StrideError(f"run {run_id} has no logged model (tag {MODEL_URI_TAG}); train with tracking.log_model=true")
    key = comparison_key(run, metric)
    return Candidate(run, key or metric, run.data.metrics.get(key, float("nan")) if key else float("nan"),
                     "chosen with --run", 1)
