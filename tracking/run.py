"""The MLflow run of one training: opened with stride's tags, closed with the status the training earned.

    with MlflowRun(uri, config, parent_run_id=search_id) as run:
        recorder = RunRecorder(run)                        # stride.tracking.recorder: while it trains
        outcome = train(config, callbacks=recorder.callbacks, loggers=recorder.loggers)
        model_uri = publish_training(run, outcome)         # stride.tracking.publish: after it returned

The run is created (or continued, for a restarted trial) explicitly here, with stride's tags, its
parent for nesting and the tags of the process that owns it. Leaving the `with` block ends it
FINISHED (with where its time went), KILLED (interrupted) or FAILED. Only global rank 0 makes one:
other DDP ranks pass no recorder.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from mlflow.entities import Metric, RunData
from mlflow.tracking import MlflowClient

from stride import __version__
from stride.config.schema import StrideConfig
from stride.tracking.contract import (
    ARCHITECTURE_TAG,
    ENDED_BY_TAG,
    GIT_COMMIT_TAG,
    HOST_TAG,
    PARENT_TAG,
    PHASES,
    PID_TAG,
    PROCESS_STARTED_TAG,
    RECIPE_TAG,
    TASK_TAG,
    VERSION_TAG,
    WALL_TIME_METRIC,
    phase_time_metric,
)
from stride.tracking.store import ensure_experiment


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


def git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


class MlflowRun:
    """An open MLflow run of `config`: `run_id`, its `client`, and what it held when opened (`opened`)."""

    def __init__(self, uri: str, config: StrideConfig, *, run_name: str | None = None,
                 parent_run_id: str | None = None, tags: dict[str, str] | None = None, run_id: str | None = None):
        self.uri, self.config = uri, config
        self.client = MlflowClient(uri)
        self.experiment_id = ensure_experiment(uri, config.tracking.experiment)
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=run_name or config.tracking.run_name
                                         or config.name, tags={**self._tags(parent_run_id, tags), **process_tags()})
        else:  # a restarted trial continues its run, from another process
            run = self.client.get_run(run_id)
            for key, value in process_tags().items():
                self.client.set_tag(run_id, key, value)
            self.client.update_run(run_id, status="RUNNING")
        self.run_id: str = run.info.run_id
        self.opened: RunData = run.data  # a continued run's params keep their first values
        self._ended = False
        self._started_s = time.perf_counter()
        self._marks: dict[str, float] = {}  # phase -> when it began (perf_counter), for the time_*_s metrics

    def _tags(self, parent_run_id: str | None, tags: dict[str, str] | None) -> dict[str, str]:
        config = self.config
        all_tags = {VERSION_TAG: __version__, RECIPE_TAG: config.name, TASK_TAG: config.task,
                    ARCHITECTURE_TAG: config.model.architecture, **config.tracking.tags, **(tags or {})}
        if commit := git_commit():
            all_tags[GIT_COMMIT_TAG] = commit
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        return all_tags

    # -- where the run's time goes -------------------------------------------------------------
    def mark(self, phase: str) -> None:
        """`phase` (one of contract.PHASES after the first) begins now."""
        self._marks.setdefault(phase, time.perf_counter())

    def phase_times(self, now: float) -> dict[str, float]:
        """Where the run's wall time went: `time_setup_s` (run created to fit start: trainer, data),
        `time_fit_s` (training and validation), `time_test_s`, `time_logging_s` (plots, the model)."""
        marks = [(PHASES[0], self._started_s), *((p, self._marks[p]) for p in PHASES[1:] if p in self._marks),
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

    def __enter__(self) -> MlflowRun:
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
