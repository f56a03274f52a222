"""stride's own progress of a search: one line per trial as it ends (Ray's tables stay for --verbose)."""

from __future__ import annotations

import sys
from typing import Any

from ray import tune

from stride.tuning.space import TIME_ATTR
from stride.tuning.spec import applicable_params


class TrialProgress(tune.Callback):
    """Prints `[done/total] trial ID params: N epochs, metric=value (completed | stopped early | failed)`."""

    def __init__(self, metric: str, max_epochs: int, total: int):
        self.metric, self.max_epochs, self.total = metric, max_epochs, total
        self.done = 0

    def _line(self, trial: Any, outcome: str) -> None:
        self.done += 1
        result = trial.last_result or {}
        epochs = int(result.get(TIME_ATTR, 0))
        value = result.get(self.metric)
        shown = f"{self.metric} {value:.4f}" if isinstance(value, (int, float)) else f"no {self.metric}"
        used = applicable_params(trial.config or {})  # without what the trial's architecture lacks
        params = " ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in sorted(used.items()))
        if outcome == "completed" and epochs < (trial.config or {}).get("trainer.max_epochs", self.max_epochs):
            outcome = "stopped early by the scheduler"
        print(f"  [{self.done}/{self.total}] trial {trial.trial_id} {params}: {epochs} epoch(s), {shown} ({outcome})",
              file=sys.stdout, flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "completed")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "failed; see its error file in the search folder")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
