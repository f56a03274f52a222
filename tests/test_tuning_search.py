"""Searches on a real local Ray (2 CPUs) tracked in a real MLflow server: ASHA, DDP trials,
crashed workers, interrupted drivers, and each bad input failing before trials start."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import ray
import yaml

from stride.errors import StrideError
from stride.tracking.contract import SEARCH_ID_TAG, TRIAL_ID_TAG
from stride.tuning import TrialResources, resume_search, run_search

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """One embedded Ray for the module: starting Ray takes longer than most trials here."""
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def tiny_spec(tmp_path: Path, digits_shards: Path, experiment: str, **fields) -> str:
    spec = {"base": "digits-cnn",
            "overrides": [f"data.path={digits_shards}", "model.channels=8", "trainer.max_epochs=2",
                          "data.batch_size=128", f"trainer.checkpoint_dir={tmp_path / 'checkpoints'}",
                          f"tracking.experiment={experiment}", "tracking.log_model=false"],
            "space": {"optim.lr": {"grid": [0.05, 0.0001, 0.02]}},
            "num_samples": 1, "max_concurrent_trials": 1, "scheduler": "fifo", **fields}
    path = tmp_path / f"{experiment}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def driver_with_a_finished_trial(spec: str, name: str, experiment: str, uri: str, tmp_path: Path, **popen):
    """`stride tune` in its own process, returned once one of its trials has finished (with that run)."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "stride.pipelines.cli", "tune", "--config", spec, "--name", name,
         "--storage", str(tmp_path / "ray"), "--tracking-uri", uri],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    client = mlflow.MlflowClient(uri)
    deadline = time.monotonic() + 240
    finished = []
    while time.monotonic() < deadline and driver.poll() is None and not finished:
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            finished = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'")
        time.sleep(1)
    assert finished, driver.communicate()[0][-3000:] if driver.poll() is not None else "no trial finished in time"
    return driver, finished


def children(uri: str, search_id: str) -> list:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_run(search_id).info.experiment_id
    runs = client.search_runs([experiment], filter_string=f"tags.`{SEARCH_ID_TAG}` = '{search_id}'")
    return [r for r in runs if r.info.run_id != search_id]


def test_asha_search_records_parent_children_leaderboard_and_best(local_ray, mlflow_server, digits_shards,
                                                                   tmp_path):
    # one trial at a time in grid order: the good lr sets the first rung, so ASHA stops the bad one
    spec = tiny_spec(tmp_path, digits_shards, "asha", scheduler={"name": "asha", "grace_period": 1,
                                                                  "reduction_factor": 2})
    result = run_search(spec, tracking_uri=mlflow_server, storage=str(tmp_path / "ray"), name="asha", verbose=0)

    client = mlflow.MlflowClient(mlflow_server)
    parent = client.get_run(result.parent_run_id)
    runs = children(mlflow_server, result.parent_run_id)
    assert parent.info.status == "FINISHED" and len(runs) == 3 == len(result.rows)
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {result.parent_run_id}
    assert len({r.data.tags[TRIAL_ID_TAG] for r in runs}) == 3
    statuses = {r.data.params["optim.lr"]: r.info.status for r in runs}
    assert statuses == {"0.05": "FINISHED", "0.0001": "KILLED", "0.02": statuses["0.02"]}
    assert statuses["0.02"] in ("FINISHED", "KILLED")
    stopped = next(r for r in runs if r.data.params["optim.lr"] == "0.0001")
    assert len(client.get_metric_history(stopped.info.run_id, "val_acc")) == 1  # stopped after the first rung

    best = max(runs, key=lambda r: r.data.metrics["best_val_acc"] if "best_val_acc" in r.data.metrics else
               max(m.value for m in client.get_metric_history(r.info.run_id, "val_acc")))
    assert parent.data.tags["stride.best_run_id"] == best.info.run_id == result.best_run_id
    assert parent.data.tags["stride.best_trial_id"] == best.data.tags[TRIAL_ID_TAG]
    assert parent.data.tags["stride.search_spec"] == "asha"
    assert parent.data.metrics["best_val_acc"] == pytest.approx(result.best_metric)

    board = Path(client.download_artifacts(result.parent_run_id, "leaderboard.csv", str(tmp_path)))
    rows = list(csv.DictReader(board.open()))
    assert [r["rank"] for r in rows] == ["1", "2", "3"] and rows[0]["run_id"] == best.info.run_id
    assert {"trial_id", "run_id", "status", "epochs", "val_acc", "optim.lr"} <= set(rows[0])
    assert {r["status"] for r in rows} <= {"completed", "stopped"} and "stopped" in {r["status"] for r in rows}
    plots = [a.path for a in client.list_artifacts(result.parent_run_id, "plots")]
    assert plots == ["plots/val_acc_vs_params.png"]
    assert "optim.lr" in result.table() and result.best_trial_id in result.table()


def test_trials_reuse_their_process_and_the_overhead_report_accounts_for_each(local_ray, mlflow_server,
                                                                               digits_shards, tmp_path):
    from stride.tracking.run import PID_TAG
    from stride.tuning.overhead import measure_search_overhead

    spec = tiny_spec(tmp_path, digits_shards, "overhead", space={"optim.lr": {"grid": [0.05, 0.02]}})
    report = measure_search_overhead(spec, overrides=["trainer.max_epochs=1"], tracking_uri=mlflow_server,
                                     storage=str(tmp_path / "ray"))
    assert [row["status"] for row in report.trials] == ["finished", "finished"]
    for row in report.trials:
        assert row["epochs"] == 1 and 0 < row["epochs_s"] < row["trial_s"]
        assert row["overhead_s"] == pytest.approx(row["trial_s"] - row["epochs_s"], abs=0.02)
        assert {"time_setup_s", "time_test_s", "time_logging_s"} <= set(row)
    assert report.summary["trial_s total"] == pytest.approx(sum(r["trial_s"] for r in report.trials), abs=0.05)
    runs = children(mlflow_server, report.parent_run_id)
    assert len({r.data.tags[PID_TAG] for r in runs}) == 1  # the second trial ran in the first one's process
    assert "overhead_s" in report.text()


def test_two_worker_ddp_trial_logs_one_child_run(local_ray, mlflow_server, digits_shards, tmp_path):
    spec = tiny_spec(tmp_path, digits_shards, "ddp-trial", space={"optim.lr": {"choice": [0.05]}})
    result = run_search(spec, overrides=["trainer.max_epochs=1", "data.batch_size=64"], tracking_uri=mlflow_server,
                        storage=str(tmp_path / "ray"), name="ddp", resources=TrialResources(cpus=2, workers=2),
                        verbose=0)
    runs = children(mlflow_server, result.parent_run_id)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["test_samples"] == 360  # both ranks tested, each sample once
    assert len(mlflow.MlflowClient(mlflow_server).get_metric_history(runs[0].info.run_id, "val_acc")) == 1
    assert result.rows[0]["status"] == "completed" and result.best_run_id == runs[0].info.run_id


def test_killed_worker_restarts_the_trial_from_its_checkpoint(local_ray, mlflow_server, digits_shards, tmp_path):
    import pytorch_lightning as pl

    marker = tmp_path / "crashed-once"

    class CrashOnce(pl.Callback):  # a local class: Ray ships it to the trial by value
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1 and not marker.exists():
                marker.touch()
                os._exit(1)  # the trial's process dies like an OOM-killed worker

    spec = tiny_spec(tmp_path, digits_shards, "crash", space={"optim.lr": {"choice": [0.05]}}, max_failures=1)
    result = run_search(spec, overrides=["trainer.max_epochs=3"], tracking_uri=mlflow_server,
                        storage=str(tmp_path / "ray"), name="crash", extra_callbacks=[CrashOnce()], verbose=0)
    assert marker.exists()
    runs = children(mlflow_server, result.parent_run_id)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the restart reused the child run
    history = mlflow.MlflowClient(mlflow_server).get_metric_history(runs[0].info.run_id, "val_acc")
    steps = sorted(m.step for m in history)  # Lightning's global step at each epoch's validation
    assert len(set(steps)) == 3 and steps[2] - steps[1] == steps[1] - steps[0]  # epoch 3 after resuming, none twice
    assert result.rows[0]["status"] == "completed" and result.rows[0]["epochs"] == 3
    # over all three epochs, though Tune's result files after the restore hold only the last ones
    assert result.rows[0]["val_acc"] == pytest.approx(max(m.value for m in history))


# SIGINT's graceful stop and resume: 65 s, outside CI's budget (`pytest -m cluster`); CI keeps the harder
# SIGKILL case below, which resumes the same way from the same state.
@pytest.mark.cluster
def test_interrupted_search_resumes_without_rerunning_or_duplicating(local_ray, mlflow_server, digits_shards,
                                                                     tmp_path):
    spec = tiny_spec(tmp_path, digits_shards, "resume")
    driver, finished = driver_with_a_finished_trial(spec, "interrupted", "resume", mlflow_server, tmp_path)
    client = mlflow.MlflowClient(mlflow_server)
    driver.send_signal(signal.SIGINT)  # Ctrl-C
    output = driver.communicate(timeout=120)[0]
    assert driver.returncode == 130, output[-3000:]
    assert "stride tune --resume interrupted" in output
    first = finished[0]
    search_id = first.data.tags[SEARCH_ID_TAG]
    assert client.get_run(search_id).info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in children(mlflow_server, search_id))

    result = resume_search("interrupted", storage=str(tmp_path / "ray"), verbose=0, tracking_uri=mlflow_server)
    assert result.parent_run_id == search_id and not result.interrupted
    runs = children(mlflow_server, search_id)
    assert len(runs) == 3 and len({r.data.tags[TRIAL_ID_TAG] for r in runs}) == 3
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert client.get_run(first.info.run_id).info.end_time == first.info.end_time  # not trained again
    assert client.get_run(search_id).info.status == "FINISHED" and len(result.rows) == 3


def test_gpus_on_a_gpu_less_cluster_fail_before_any_trial(local_ray, mlflow_server, digits_shards, tmp_path):
    spec = tiny_spec(tmp_path, digits_shards, "gpu")
    with pytest.raises(StrideError, match=r"--gpus-per-trial 1 asked for GPUs, but the Ray cluster \(2 CPUs, "
                                          r"0 GPUs\) has none"):
        run_search(spec, tracking_uri=mlflow_server, storage=str(tmp_path / "ray"), name="gpu",
                   resources=TrialResources(gpus=1))
    with pytest.raises(StrideError, match="one trial needs 4 CPUs"):
        run_search(spec, tracking_uri=mlflow_server, storage=str(tmp_path / "ray"), name="cpu",
                   resources=TrialResources(cpus=4))


def test_unreachable_ray_address_fails_within_30_s(mlflow_server, digits_shards, tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "stride.pipelines.cli", "tune", "--config", tiny_spec(tmp_path, digits_shards, "addr"),
         "--address", "127.0.0.1:9", "--tracking-uri", mlflow_server, "--storage", str(tmp_path / "ray")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert time.monotonic() - started < 30
    assert result.returncode == 2 and "Ray cluster at 127.0.0.1:9 is unreachable" in result.stderr


def test_tracking_server_down_fails_before_ray_starts(digits_shards, tmp_path):
    started = time.monotonic()
    with pytest.raises(StrideError, match="MLflow tracking server http://127.0.0.1:9 is unreachable"):
        run_search(tiny_spec(tmp_path, digits_shards, "down"), tracking_uri="http://127.0.0.1:9",
                   storage=str(tmp_path / "ray"))
    assert time.monotonic() - started < 30 and not (tmp_path / "ray").exists()


def test_resume_of_an_unknown_search_lists_the_known_ones(tmp_path):
    with pytest.raises(StrideError, match="no search 'nope' in .*searches there: none"):
        resume_search("nope", storage=str(tmp_path))


class Exploit:
    """A pickle that runs code when loaded: it creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("planted", ["tuner.pkl", "evil.pkl"])
def test_resume_refuses_state_that_was_changed_and_runs_nothing(local_ray, mlflow_server, digits_shards, tmp_path,
                                                                 planted):
    import pickle

    spec = tiny_spec(tmp_path, digits_shards, f"planted-{planted[:4]}", space={"optim.lr": {"grid": [0.05]}})
    run_search(spec, overrides=["trainer.max_epochs=1"], tracking_uri=mlflow_server, storage=str(tmp_path / "ray"),
               name="planted", verbose=0)
    state = tmp_path / "ray" / "planted"
    assert (state / "tuner.pkl").is_file()  # Ray's own pickled state, which a resume unpickles
    marker = tmp_path / "code-ran"
    (state / planted).write_bytes(pickle.dumps(Exploit(marker)))
    kind = "changed" if planted == "tuner.pkl" else "unknown"
    with pytest.raises(StrideError, match=rf"not what stride recorded \({kind}: {planted}\); .*nothing was loaded"):
        resume_search("planted", storage=str(tmp_path / "ray"), verbose=0, tracking_uri=mlflow_server)
    assert not marker.exists()


# 85 s of Ray Train worker-group restarts on 2 cores: outside CI's budget (`pytest -m cluster`); CI keeps the
# single-worker kill-and-restart test above and the driver kills below.
@pytest.mark.cluster
def test_a_ray_train_worker_killed_mid_epoch_restarts_the_trial_in_the_same_run(local_ray, mlflow_server,
                                                                                 digits_shards, tmp_path):
    """Rank 1 of a 2-worker trial dies mid-epoch; Ray Train restarts the group from the last checkpoint and
    rank 0 continues the trial's MLflow run instead of opening a second one."""
    import pytorch_lightning as pl

    marker = tmp_path / "rank1-crashed"

    class CrashRankOneOnce(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 2 and trainer.global_rank == 1 and not marker.exists():
                marker.touch()
                os._exit(1)  # a worker process dying like an OOM kill, in the middle of epoch 2

    spec = tiny_spec(tmp_path, digits_shards, "ddp-crash", space={"optim.lr": {"choice": [0.05]}}, max_failures=1)
    result = run_search(spec, overrides=["trainer.max_epochs=3", "data.batch_size=64"], tracking_uri=mlflow_server,
                        storage=str(tmp_path / "ray"), name="ddp-crash", resources=TrialResources(cpus=2, workers=2),
                        extra_callbacks=[CrashRankOneOnce()], verbose=0)
    assert marker.exists()
    runs = children(mlflow_server, result.parent_run_id)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # continued, not duplicated
    history = mlflow.MlflowClient(mlflow_server).get_metric_history(runs[0].info.run_id, "val_acc")
    assert len({m.step for m in history}) == 3  # epochs 1, 2 (after the restart) and 3, each once
    assert runs[0].data.metrics["test_samples"] == 360 and result.rows[0]["status"] == "completed"


def test_a_search_driver_killed_with_sigkill_resumes_without_duplicates(local_ray, mlflow_server, digits_shards,
                                                                        tmp_path):
    """kill -9 of `stride tune`: no digests were recorded, so resume needs --trust-storage (the folder is ours);
    then every trial has exactly one run and the leaderboard is complete."""
    spec = tiny_spec(tmp_path, digits_shards, "sigkill")
    driver, finished = driver_with_a_finished_trial(spec, "killed", "sigkill", mlflow_server, tmp_path)
    driver.kill()
    driver.communicate(timeout=60)
    with pytest.raises(StrideError, match="holds no digests of its saved state .* --trust-storage"):
        resume_search("killed", storage=str(tmp_path / "ray"), verbose=0, tracking_uri=mlflow_server)
    result = resume_search("killed", storage=str(tmp_path / "ray"), verbose=0, tracking_uri=mlflow_server,
                           trust_storage=True)
    search_id = finished[0].data.tags[SEARCH_ID_TAG]
    runs = children(mlflow_server, search_id)
    assert len(runs) == 3 and len({r.data.tags[TRIAL_ID_TAG] for r in runs}) == 3  # zero duplicates
    assert {r.info.status for r in runs} == {"FINISHED"} and len(result.rows) == 3
    assert all(row["status"] == "completed" for row in result.rows)


def test_a_search_driver_stopped_with_sigterm_records_its_state_and_says_how_to_resume(local_ray, mlflow_server,
                                                                                      digits_shards, tmp_path):
    """SIGTERM as `timeout`, Slurm and systemd send it: to the driver's whole process group, Ray's own processes
    included. The runs end KILLED, the state's digests are recorded (no --trust-storage needed), the driver says
    how to resume and exits 143. A resume then reads every trial checkpoint as weights before starting anything."""
    import pickle

    from stride.tuning.integrity import DIGESTS_TAG, verify_state

    spec = tiny_spec(tmp_path, digits_shards, "sigterm")
    driver, finished = driver_with_a_finished_trial(spec, "terminated", "sigterm", mlflow_server, tmp_path,
                                                    start_new_session=True)
    os.killpg(driver.pid, signal.SIGTERM)
    output = driver.communicate(timeout=120)[0]
    assert driver.returncode == 143, output[-3000:]
    assert "SIGTERM received" not in output  # Ray's crash handler's stack dump
    assert (f"continue with: stride tune --resume terminated --storage {tmp_path / 'ray'} --tracking-uri "
            f"{mlflow_server}") in output and "stride tune: stopped by SIGTERM" in output
    search_id = finished[0].data.tags[SEARCH_ID_TAG]
    parent = mlflow.MlflowClient(mlflow_server).get_run(search_id)
    assert parent.info.status == "KILLED" and DIGESTS_TAG in parent.data.tags
    assert all(r.info.status != "RUNNING" for r in children(mlflow_server, search_id))
    verify_state(mlflow_server, search_id, str(tmp_path / "ray"), "terminated")  # what --resume checks first

    marker = tmp_path / "code-ran"
    checkpoint = sorted((tmp_path / "ray" / "terminated").rglob("checkpoint.ckpt"))[-1]
    checkpoint.write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(StrideError, match=rf"checkpoint {checkpoint} cannot be loaded as stride weights: .*"
                                          r"nothing was loaded from it"):
        resume_search("terminated", storage=str(tmp_path / "ray"), verbose=0, tracking_uri=mlflow_server)
    assert not marker.exists()


def test_a_trial_that_meets_a_checkpoint_that_is_not_weights_fails_the_search(local_ray, mlflow_server, digits_shards,
                                                                               tmp_path):
    """A checkpoint replaced while the search runs: the restarted trial refuses it, and the search fails with
    that one message instead of finishing without the trial."""
    import pickle

    import pytorch_lightning as pl

    marker, state = tmp_path / "code-ran", tmp_path / "ray" / "poisoned"
    poison = pickle.dumps(Exploit(marker))

    class PoisonCheckpointsAndCrash(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                for checkpoint in state.rglob("checkpoint.ckpt"):
                    checkpoint.write_bytes(poison)
                os._exit(1)  # Tune restarts the trial from its (now poisoned) epoch-0 checkpoint

    spec = tiny_spec(tmp_path, digits_shards, "poisoned", space={"optim.lr": {"choice": [0.05]}}, max_failures=1)
    with pytest.raises(StrideError, match=r"search poisoned: 1 trial\(s\) refused a checkpoint; checkpoint .*"
                                          r"cannot be loaded as stride weights"):
        run_search(spec, tracking_uri=mlflow_server, storage=str(tmp_path / "ray"), name="poisoned",
                   extra_callbacks=[PoisonCheckpointsAndCrash()], verbose=0)
    assert not marker.exists()
    [parent] = mlflow.MlflowClient(mlflow_server).search_runs(
        [mlflow.MlflowClient(mlflow_server).get_experiment_by_name("poisoned").experiment_id],
        filter_string="tags.`stride.kind` = 'search'")
    assert parent.info.status == "FAILED"
