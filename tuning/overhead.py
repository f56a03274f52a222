"""Where a search's time goes (`stride bench --search`): per trial, its wall time as the driver saw it
minus the time it spent training and validating.

The driver clocks each trial from Tune's start to its end; the trial's MLflow run holds the
rest: `epoch_time_s` per epoch (training + validation), and, for a finished run, the phases
`time_setup_s` (trainer, data), `time_test_s` and `time_logging_s` (plots, the exported model).
What is left of a trial's time after its epochs is overhead: a process or actor to start,
imports, the MLflow run, testing and logging.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mlflow.tracking import MlflowClient
from ray import tune

from stride.text_table import align_columns
from stride.tracking.contract import EPOCH_TIME_METRIC, phase_time_metric
from stride.tuning.runs import child_runs
from stride.tuning.search import run_search

PHASES = tuple(phase_time_metric(phase) for phase in ("setup", "test", "logging"))


class TrialClock(tune.Callback):
    """Driver-side start and end of every trial (wall clock, seconds since the epoch)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.time())

    def _end(self, trial: Any) -> None:
        self.ended[trial.trial_id] = time.time()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)


@dataclass
class SearchOverhead:
    spec: str
    wall_time_s: float
    parent_run_id: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        columns = ["trial_id", "status", "epochs", "trial_s", "epochs_s", "overhead_s", "start_s", *PHASES]
        lines = [f"stride bench --search {self.spec}: {len(self.trials)} trials in {self.wall_time_s:.1f} s",
                 align_columns([columns, *([str(row.get(c, "")) for c in columns] for row in self.trials)])]
        lines += [f"  {key}: {value:.2f}" for key, value in self.summary.items()]
        return "\n".join(lines)


def measure_search_overhead(spec: str, *, overrides: Sequence[str] = (), tracking_uri: str | None = None,
                            storage: str, spec_overrides: dict[str, Any] | None = None) -> SearchOverhead:
    clock = TrialClock()
    result = run_search(spec, overrides=overrides, tracking_uri=tracking_uri, storage=storage,
                        spec_overrides=spec_overrides, tune_callbacks=[clock])
    client = MlflowClient(result.tracking_uri)
    rows = []
    for trial_id, run in child_runs(result.tracking_uri, result.parent_run_id).items():
        if trial_id not in clock.started or trial_id not in clock.ended:
            continue
        epochs = [m.value for m in client.get_metric_history(run.info.run_id, EPOCH_TIME_METRIC)]
        trial_s = clock.ended[trial_id] - clock.started[trial_id]
        rows.append({"trial_id": trial_id, "status": run.info.status.lower(), "epochs": len(epochs),
                     "trial_s": round(trial_s, 2), "epochs_s": round(sum(epochs), 2),
                     "overhead_s": round(trial_s - sum(epochs), 2),
                     "start_s": round(run.info.start_time / 1000 - clock.started[trial_id], 2),
                     **{phase: round(run.data.metrics[phase], 2) for phase in PHASES if phase in run.data.metrics}})
    rows.sort(key=lambda row: clock.started[row["trial_id"]])
    overheads = [row["overhead_s"] for row in rows]
    summary = {"overhead_s median": statistics.median(overheads), "overhead_s mean": statistics.fmean(overheads),
               "overhead_s max": max(overheads), "epochs_s total": sum(r["epochs_s"] for r in rows),
               "trial_s total": sum(r["trial_s"] for r in rows)} if rows else {}
    return SearchOverhead(spec, round(result.wall_time_s, 2), result.parent_run_id, rows,
                          {k: round(v, 2) for k, v in summary.items()})
