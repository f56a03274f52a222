"""`stride promote` and `stride registry` against a real MLflow server: selection, gate, lineage, idempotency,
rollback, concurrency and every bad input (each leaving the registry unchanged)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import free_port
from mlflow import MlflowClient
from test_registry_support import TrainedRuns, registry_state, runs, stride  # noqa: F401 (fixture)

from stride.datamodules.manifest import manifest_sha256
from stride.errors import StrideError
from stride.registry import promote_best
from stride.registry.lock import lock_name, registry_lock
from stride.tracking.contract import LOCK_EXPIRES_TAG, LOCK_OWNER_TAG, LOCK_TAG

pytestmark = pytest.mark.slow  # end to end: real Lightning, MLflow, Ray or processes


def aliases(server: str, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in MlflowClient(server).get_registered_model(name).aliases.items()}


def run_of(server: str, name: str, alias: str) -> str:
    return MlflowClient(server).get_model_version_by_alias(name, alias).tags["stride.run_id"]


def test_promote_picks_the_best_run_with_a_model_and_records_its_lineage(mlflow_server, runs: TrainedRuns,
                                                                         digits_shards, capsys):
    code, out, err = stride(capsys, "promote", "--experiment", runs.experiment, "--model-name", "digits-best",
                            "--tracking-uri", mlflow_server)
    assert code == 0, err
    assert "highest best_val_acc (best epoch)" in out and "promoted" in out
    client = MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias("digits-best", "champion")
    run = client.get_run(runs.better)  # the model-less run has a higher best_val_acc but cannot be served
    tags = version.tags
    assert version.run_id == runs.better and tags["stride.run_id"] == runs.better
    assert tags["stride.search_id"] == runs.search
    assert tags["dataset.manifest_sha256"] == run.data.tags["dataset.manifest_sha256"] == manifest_sha256(digits_shards)
    config = Path(mlflow.artifacts.download_artifacts(run_id=runs.better, artifact_path="config.yaml",
                                                      tracking_uri=mlflow_server)).read_bytes()
    assert tags["stride.config_sha256"] == hashlib.sha256(config).hexdigest()
    assert tags.get("git.commit") == run.data.tags.get("git.commit")
    # the same model on the same split: the re-evaluation reproduces training's test accuracy
    assert float(tags["eval.test_acc"]) == pytest.approx(run.data.metrics["test_acc"], abs=1e-4)
    assert float(tags["eval.test_samples"]) == run.data.metrics["test_samples"] == 360
    assert tags["stride.model_uri"] == run.data.tags["stride.model_uri"]
    # the run logged weights only: promotion exported its model, into the run and the run's experiment
    assert run.data.tags["stride.model_deferred"] == run.data.tags["stride.model_exported_from"] == "weights/module.pt"
    logged = client.get_logged_model(tags["stride.model_uri"].removeprefix("models:/"))
    assert logged.source_run_id == runs.better and logged.experiment_id == run.info.experiment_id
    assert [output.model_id for output in run.outputs.model_outputs] == [logged.model_id]
    assert "digits_cnn" in version.description and 'load_model("models:/digits-best@champion")' in version.description

    before = registry_state(mlflow_server)  # promoting the champion again changes nothing
    code, out, _ = stride(capsys, "promote", "--search", runs.search, "--model-name", "digits-best",
                          "--tracking-uri", mlflow_server)
    assert code == 0 and "already is @champion" in out
    assert registry_state(mlflow_server) == before

    code, _, err = stride(capsys, "registry", "rollback", "digits-best", "--tracking-uri", mlflow_server)
    assert code == 2 and "has no @previous version to roll back to" in err
    assert registry_state(mlflow_server) == before


def test_gate_refuses_a_worse_challenger_accepts_a_better_one_and_rollback_restores(mlflow_server, runs, capsys):
    def promote(run_id: str, *extra: str) -> str:
        code, out, err = stride(capsys, "promote", "--run", run_id, "--model-name", "digits-gate",
                                "--tracking-uri", mlflow_server, *extra)
        assert code == 0, err
        return out

    assert "first test_acc on record" in promote(runs.worse)
    out = promote(runs.better)
    assert "decision  : promoted" in out and "version 1 -> @previous" in out
    assert aliases(mlflow_server, "digits-gate") == {"champion": "2", "previous": "1"}
    champion = MlflowClient(mlflow_server).get_model_version("digits-gate", "2")
    assert champion.tags["stride.replaced_version"] == "1" and champion.tags["stride.forced"] == "false"

    before = registry_state(mlflow_server)
    out = promote(runs.worse)
    assert "decision  : refused" in out and "vs champion" in out
    assert registry_state(mlflow_server) == before

    out = promote(runs.worse, "--force")
    assert "(FORCED)" in out
    assert aliases(mlflow_server, "digits-gate") == {"champion": "3", "previous": "2"}
    assert MlflowClient(mlflow_server).get_model_version("digits-gate", "3").tags["stride.forced"] == "true"

    code, out, _ = stride(capsys, "registry", "rollback", "digits-gate", "--tracking-uri", mlflow_server)
    assert code == 0 and "version 2 -> @champion" in out
    assert aliases(mlflow_server, "digits-gate") == {"champion": "2", "previous": "3"}
    assert run_of(mlflow_server, "digits-gate", "champion") == runs.better

    code, out, _ = stride(capsys, "registry", "list", "--tracking-uri", mlflow_server)
    assert "digits-gate" in out and "@champion = v2" in out and "stride-lock" not in out
    code, out, _ = stride(capsys, "registry", "show", "digits-gate", "--tracking-uri", mlflow_server)
    assert code == 0 and "version 2 @champion" in out and "stride.config_sha256" in out and "eval.test_acc" in out


def test_concurrent_promotions_leave_exactly_one_consistent_champion(mlflow_server, runs, tmp_path):
    """Three processes race: the better run twice, the worse once. Whatever the order, the better run ends up
    champion exactly once, and the worse one is either refused or its version became @previous."""
    def start(run_id: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "stride.pipelines.cli", "promote", "--run", run_id,
                                 "--model-name", "digits-race", "--tracking-uri", mlflow_server],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore"}, cwd=tmp_path)

    processes = [start(runs.better), start(runs.worse), start(runs.better)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    versions = MlflowClient(mlflow_server).search_model_versions("name = 'digits-race'")
    by_run = {}
    for version in versions:
        by_run.setdefault(version.run_id, []).append(version.version)
    assert len(by_run[runs.better]) == 1, outputs
    names = aliases(mlflow_server, "digits-race")
    assert names["champion"] == by_run[runs.better][0]
    if runs.worse in by_run:  # the worse one came first, then lost the champion to the better one
        assert names["previous"] == by_run[runs.worse][0] and len(versions) == 2
    else:
        assert "previous" not in names and len(versions) == 1
    assert sum("already is @champion" in out for out in outputs) >= 1
    assert "digits-race.stride-lock" not in registry_state(mlflow_server)


def test_a_held_lock_blocks_promotion_and_an_expired_one_is_broken(mlflow_server, runs):
    client = MlflowClient(mlflow_server)
    with registry_lock(client, "digits-locked", timeout_s=5):
        before = registry_state(mlflow_server)
        with pytest.raises(StrideError, match="'digits-locked' is locked by another promotion"):
            promote_best(mlflow_server, run_id=runs.better, model_name="digits-locked", lock_timeout_s=1)
        assert registry_state(mlflow_server) == before
    assert lock_name("digits-locked") not in registry_state(mlflow_server)

    client.create_registered_model(lock_name("digits-locked"), tags={  # left behind by a process that died
        LOCK_TAG: "true", LOCK_OWNER_TAG: "crashed-host:1:dead", LOCK_EXPIRES_TAG: f"{time.time() - 1:.3f}"})
    result = promote_best(mlflow_server, run_id=runs.better, model_name="digits-locked", lock_timeout_s=30)
    assert result.promoted and result.version == "1"
    assert lock_name("digits-locked") not in registry_state(mlflow_server)


@pytest.fixture(scope="module")
def other_dataset(tmp_path_factory) -> Path:
    from stride.datamodules.sources.digits import prepare_digits

    out = tmp_path_factory.mktemp("other") / "digits-seed1"
    prepare_digits(out, seed=1)
    return out


@pytest.fixture(scope="module")
def special_experiments(mlflow_server) -> None:
    """An experiment whose only run is still running, and one whose only finished run has no model."""
    client = MlflowClient(mlflow_server)
    running = client.create_experiment("registry-running")
    client.create_run(running)
    bare = client.create_experiment("registry-no-model")
    run = client.create_run(bare).info.run_id
    client.log_metric(run, "val_acc", 0.5)
    client.set_terminated(run, "FINISHED")


BAD_PROMOTIONS = {
    "unknown experiment": (["--experiment", "nope"], "no experiment named 'nope' (experiments: "),
    "unknown metric": (["--experiment", "registry-tests", "--metric", "val_f1"],
                       "logged metric 'val_f1' (metrics logged: best_val_acc, epoch, epoch_time_s, lr, test_acc"),
    "no finished run": (["--experiment", "registry-running"],
                        "'registry-running' has no finished run (1 run(s): RUNNING)"),
    "no logged model": (["--experiment", "registry-no-model"], "with metric 'val_acc' has a logged model"),
    "run without model": (["--run", "{no_model}"], "run {no_model} has no logged model"),
    "unknown search": (["--search", "0123456789abcdef"], "--search 0123456789abcdef: no such run"),
    "dataset changed": (["--run", "{better}", "--data", "{other}"], "but run {better} was trained on"),
    "dataset missing": (["--run", "{better}", "--data", "/no/such/dataset"], "no dataset at /no/such/dataset"),
    "two sources": (["--run", "{better}", "--experiment", "registry-tests"], "not allowed with argument"),
}


@pytest.mark.parametrize("case", list(BAD_PROMOTIONS))
def test_bad_promotions_fail_clearly_and_change_nothing(case, mlflow_server, runs, other_dataset,
                                                        special_experiments, capsys):
    argv, message = BAD_PROMOTIONS[case]
    values = {"no_model": runs.no_model, "better": runs.better, "other": other_dataset}
    before = registry_state(mlflow_server)
    argv = ["promote", "--model-name", "digits-bad", "--tracking-uri", mlflow_server,
            *(a.format(**values) for a in argv)]
    try:
        code, _, err = stride(capsys, *argv)
    except SystemExit as exit_:  # argparse rejects conflicting options itself
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2 and message.format(**values) in err, err
    assert registry_state(mlflow_server) == before


def test_unreachable_server_and_unknown_model_fail_clearly(mlflow_server, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = stride(capsys, "promote", "--experiment", "x", "--model-name", "m", "--tracking-uri", dead)
    assert code == 2 and f"MLflow tracking server {dead} is unreachable" in err
    code, _, err = stride(capsys, "registry", "show", "nope", "--tracking-uri", mlflow_server)
    assert code == 2 and "registered model 'nope'" in err
    code, _, err = stride(capsys, "registry", "rollback", "nope", "--tracking-uri", mlflow_server)
    assert code == 2 and "nope" in err
