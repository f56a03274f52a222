"""Search state, checkpoints and MLflow artifacts in a bucket of a real S3-compatible server (issue 24).

A `moto` server on 127.0.0.1 stands in for S3/MinIO; every client (boto3 in MLflow, pyarrow in Ray Tune)
reaches it over HTTP through the standard AWS configuration only (`AWS_ENDPOINT_URL_S3` and the credentials
in the environment), as it would a real store. Two tracking servers: one that proxies artifacts into the
bucket (`--artifacts-destination s3://...`, clients see `mlflow-artifacts:/` URIs) and one that only names
the bucket (`--default-artifact-root s3://... --no-serve-artifacts`, clients write with boto3 themselves).
Neither the access key id nor the secret key may appear in MLflow, in the search state or in any output.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import boto3
import mlflow
import pytest
import ray
from conftest import running_mlflow_server
from ray import tune
from s3_server import TEST_CREDENTIALS, S3Server, bucket, s3_env, s3_server  # noqa: F401 (fixtures)

from stride.errors import StrideError
from stride.pipelines.cli import main
from stride.registry import write_sample_images
from stride.tracking.contract import (
    DEFERRED_MODEL_TAG,
    EXPORTED_LATER_TAG,
    MODEL_URI_TAG,
    RESUMED_FROM_TAG,
    SEARCH_ID_TAG,
    TRIAL_ID_TAG,
)
from stride.tuning import run_search
from stride.tuning.cluster import CREDENTIAL_ENV, forwarded_env, keep_credentials_out_of_ray
from stride.tuning.distributed import storage_root
from stride.tuning.integrity import verify_state

SECRETS = (TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"], TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="module")
def s3(s3_server: S3Server) -> Iterator[tuple[S3Server, str]]:
    """For the whole module: the server's endpoint and the test credentials in the environment (which the MLflow
    servers and Ray's workers inherit), and one bucket; (server, bucket name)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.env().items():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        name = "stride-s3-tracking"
        boto3.client("s3").create_bucket(Bucket=name)
        yield s3_server, name


def mlflow_on_s3(root: Path, *artifact_args: str) -> Iterator[str]:
    """A real `mlflow server` whose artifact store is in the bucket; its log is `root/server.log`."""
    for uri in running_mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root, artifact_args=list(artifact_args)):
        SERVER_LOGS[uri] = root / "server.log"
        yield uri


SERVER_LOGS: dict[str, Path] = {}


@pytest.fixture(scope="module")
def proxied(s3, tmp_path_factory) -> Iterator[str]:
    """An MLflow server that holds the bucket credentials and proxies artifacts into s3://BUCKET/mlartifacts."""
    yield from mlflow_on_s3(tmp_path_factory.mktemp("mlflow-proxied"), "--artifacts-destination",
                            f"s3://{s3[1]}/mlartifacts")


@pytest.fixture(scope="module")
def direct(s3, tmp_path_factory) -> Iterator[str]:
    """An MLflow server that only names s3://BUCKET/direct as artifact root: clients write there with boto3."""
    yield from mlflow_on_s3(tmp_path_factory.mktemp("mlflow-direct"), "--default-artifact-root",
                            f"s3://{s3[1]}/direct", "--no-serve-artifacts")


@pytest.fixture(scope="module")
def local_ray(s3) -> Iterator[None]:
    """One embedded Ray for the module, started after `s3` set the environment its workers inherit."""
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def digit_png(digits_shards: Path, tmp_path_factory) -> Path:
    return write_sample_images(digits_shards, tmp_path_factory.mktemp("digit"), count=1)[0][0]


def stride(capfd: pytest.CaptureFixture, *argv: object) -> tuple[int, str]:
    """The `stride` CLI in-process: (exit code, stdout + stderr, Ray's workers' lines included)."""
    capfd.readouterr()
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out + err


def objects(bucket_name: str, prefix: str) -> dict[str, bytes]:
    """Every object under `prefix`, read back over HTTP: key -> content."""
    s3 = boto3.client("s3")
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket_name, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = s3.get_object(Bucket=bucket_name, Key=item["Key"])["Body"].read()
    return found


def assert_no_credentials_in_mlflow(uri: str) -> None:
    """No run's params or tags, no logged model's, no registered version's tags hold a credential."""
    client = mlflow.MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    texts = []
    for run in client.search_runs(experiments, max_results=1000):
        texts += [*run.data.params.items(), *run.data.tags.items()]
    for model in client.search_logged_models(experiments):
        texts += [*model.params.items(), *model.tags.items()]
    for version in client.search_model_versions():
        texts += [*version.tags.items(), ("description", version.description or "")]
    assert texts
    for key, value in texts:
        assert not any(secret in f"{key}={value}" for secret in SECRETS), key


def assert_no_credentials_in(texts: dict[str, bytes]) -> None:
    assert texts
    for where, content in texts.items():
        assert not any(secret.encode() in content for secret in SECRETS), where


def ray_logs() -> dict[str, bytes]:
    """The embedded Ray's log files (driver, raylet, workers)."""
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    return {str(p): p.read_bytes() for p in (session / "logs").rglob("*") if p.is_file()}


class StopAtFirstCheckpoint(tune.Callback):
    """Interrupt the search (SIGUSR1, Tune's graceful stop) once the first trial's first checkpoint is in the bucket
    and recorded in Tune's state: that trial is unfinished, the other has not started. Once only: Tune keeps the
    callbacks in its saved state, and the resume unpickles this one too."""

    fired = False

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if not StopAtFirstCheckpoint.fired:
            StopAtFirstCheckpoint.fired = True
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.slow  # a real S3 server, an MLflow server and Ray
def test_search_on_s3_storage_resumes_from_the_bucket_and_refuses_altered_state(
        s3, proxied, local_ray, digits_shards, digit_png, tmp_path, capfd):
    """Ray storage and MLflow artifacts (proxied) in one bucket: `stride train`; a search interrupted mid-trial;
    a resume refused for an altered or planted object of its state, then continued (the interrupted trial from
    its checkpoint in the bucket); promote (the deferred export), evaluate and predict by alias."""
    server, name = s3
    storage = f"s3://{name}/ray"
    common = [f"data.path={digits_shards}", "model.channels=8", "data.batch_size=128",
              "trainer.enable_progress_bar=false", f"trainer.checkpoint_dir={tmp_path / 'checkpoints'}",
              "tracking.experiment=s3-proxied"]
    outputs = []

    code, out = stride(capfd, "train", "digits-cnn", "--tracking-uri", proxied,
                       "--set", *common, "trainer.max_epochs=1")
    outputs.append(out)
    assert code == 0, out[-3000:]
    client = mlflow.MlflowClient(proxied)
    trained = client.search_runs([client.get_experiment_by_name("s3-proxied").experiment_id])[0]
    assert trained.info.artifact_uri.startswith("mlflow-artifacts:/")  # the client never sees the bucket
    model_id = trained.data.tags[MODEL_URI_TAG].removeprefix("models:/")
    stored = objects(name, "mlartifacts/")
    assert any(k.endswith(f"{model_id}/artifacts/data/model.pt2") for k in stored), sorted(stored)[:20]

    spec = tmp_path / "search.yaml"
    spec.write_text("base: digits-cnn\nnum_samples: 1\nmax_concurrent_trials: 1\nscheduler: fifo\n"
                    "space: {optim.lr: {grid: [0.05, 0.02]}}\n")
    capfd.readouterr()
    first = run_search(str(spec), overrides=[*common, "trainer.max_epochs=2"], tracking_uri=proxied, storage=storage,
                       name="bucketed", tune_callbacks=[StopAtFirstCheckpoint()])
    outputs.append("".join(capfd.readouterr()))
    assert first.interrupted and first.path == f"{storage}/bucketed"
    state = objects(name, "ray/bucketed/")
    assert "ray/bucketed/stride_search.json" in state and "ray/bucketed/tuner.pkl" in state
    assert any(k.endswith("checkpoint.ckpt") for k in state), sorted(state)

    resume = ["tune", "--resume", "bucketed", "--storage", storage, "--tracking-uri", proxied]
    s3_client = boto3.client("s3")
    s3_client.put_object(Bucket=name, Key="ray/bucketed/tuner.pkl", Body=b"not Ray's state")
    code, out = stride(capfd, *resume)
    assert code == 2 and f"{storage}/bucketed: the saved search state is not what stride recorded (changed: " \
                          "tuner.pkl); it would be unpickled on resume, so nothing was loaded" in out, out[-3000:]
    s3_client.put_object(Bucket=name, Key="ray/bucketed/tuner.pkl", Body=state["ray/bucketed/tuner.pkl"])
    verify_state(proxied, first.parent_run_id, storage, "bucketed")  # as recorded again
    s3_client.put_object(Bucket=name, Key="ray/bucketed/planted.pkl", Body=b"planted")
    code, out = stride(capfd, *resume)
    assert code == 2 and "(unknown: planted.pkl)" in out, out[-3000:]

    code, out = stride(capfd, *resume, "--trust-storage")
    outputs.append(out)
    assert code == 0, out[-3000:]
    parent = client.get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED"
    trials = [r for r in client.search_runs([parent.info.experiment_id],
                                            filter_string=f"tags.`{SEARCH_ID_TAG}` = '{first.parent_run_id}'")
              if r.info.run_id != first.parent_run_id]
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}
    assert len({r.data.tags[TRIAL_ID_TAG] for r in trials}) == 2
    resumed = [r for r in trials if RESUMED_FROM_TAG in r.data.tags]
    assert len(resumed) == 1 and name in resumed[0].data.tags[RESUMED_FROM_TAG]  # its checkpoint in the bucket
    steps = sorted(m.step for m in client.get_metric_history(resumed[0].info.run_id, "val_acc"))
    assert len(set(steps)) == 2 and steps.count(steps[0]) == 1, steps  # epoch 1 is not trained again
    assert all(DEFERRED_MODEL_TAG in r.data.tags and MODEL_URI_TAG not in r.data.tags for r in trials)

    code, out = stride(capfd, "promote", "--search", first.parent_run_id, "--model-name", "digits-s3",
                       "--tracking-uri", proxied)
    outputs.append(out)
    assert code == 0 and "registered: digits-s3 version 1 -> @champion" in out, out[-3000:]
    version = client.get_model_version_by_alias("digits-s3", "champion")
    exported = client.get_run(version.run_id).data.tags
    assert EXPORTED_LATER_TAG in exported  # the deferred export wrote the model through the proxy into the bucket
    assert any(exported[MODEL_URI_TAG].removeprefix("models:/") in k for k in objects(name, "mlartifacts/"))

    code, out = stride(capfd, "evaluate", "--model", "models:/digits-s3@champion", "--data", digits_shards,
                       "--tracking-uri", proxied)
    outputs.append(out)
    assert code == 0 and "test_acc" in out, out[-3000:]
    code, out = stride(capfd, "predict", "--model", "models:/digits-s3@champion", digit_png, "--tracking-uri", proxied)
    outputs.append(out)
    assert code == 0 and digit_png.name in out, out[-3000:]

    assert_no_credentials_in_mlflow(proxied)
    assert_no_credentials_in(objects(name, "ray/"))
    assert_no_credentials_in({f"output {i}": out.encode() for i, out in enumerate(outputs)})
    assert_no_credentials_in({**ray_logs(), "the MLflow server's log": SERVER_LOGS[proxied].read_bytes()})


@pytest.mark.slow  # a real S3 server and an MLflow server
def test_direct_artifact_root_in_a_bucket_trains_promotes_and_predicts(s3, direct, digits_shards, digit_png,
                                                                       tmp_path, capfd, monkeypatch):
    """Clients write artifacts to the bucket themselves (boto3), with only the standard endpoint variable:
    train (weights only), promote (exports the model into the bucket), predict by alias."""
    _, name = s3
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")  # AWS_ENDPOINT_URL_S3 alone suffices
    code, out = stride(capfd, "train", "digits-cnn", "--tracking-uri", direct, "--set", f"data.path={digits_shards}",
                       "model.channels=8", "data.batch_size=128", "trainer.max_epochs=1",
                       "trainer.enable_progress_bar=false", f"trainer.checkpoint_dir={tmp_path / 'checkpoints'}",
                       "tracking.experiment=s3-direct", "tracking.log_model=deferred")
    outputs = [out]
    assert code == 0, out[-3000:]
    client = mlflow.MlflowClient(direct)
    run = client.search_runs([client.get_experiment_by_name("s3-direct").experiment_id])[0]
    assert run.info.artifact_uri.startswith(f"s3://{name}/direct/")
    assert any(k.endswith(f"{run.info.run_id}/artifacts/weights/module.pt") for k in objects(name, "direct/"))

    code, out = stride(capfd, "promote", "--run", run.info.run_id, "--model-name", "digits-direct",
                       "--tracking-uri", direct)
    outputs.append(out)
    assert code == 0 and "registered: digits-direct version 1 -> @champion" in out, out[-3000:]
    model_id = client.get_run(run.info.run_id).data.tags[MODEL_URI_TAG].removeprefix("models:/")
    assert any(model_id in k and k.endswith("data/model.pt2") for k in objects(name, "direct/"))
    code, out = stride(capfd, "predict", "--model", "models:/digits-direct@champion", digit_png,
                       "--tracking-uri", direct)
    outputs.append(out)
    assert code == 0 and digit_png.name in out, out[-3000:]

    assert_no_credentials_in_mlflow(direct)
    assert_no_credentials_in({**{f"output {i}": out.encode() for i, out in enumerate(outputs)},
                              "the MLflow server's log": SERVER_LOGS[direct].read_bytes()})


def test_storage_uris_with_credentials_are_refused_without_showing_them():
    with pytest.raises(StrideError, match=r"storage s3://\*\*\*@bucket/ray: the URI carries credentials") as refused:
        run_search("digits-cnn-search", storage="s3://AKIDEXAMPLE:wJalrXUtnFEMI@bucket/ray")
    assert "AKIDEXAMPLE" not in str(refused.value) and "wJalrXUtnFEMI" not in str(refused.value)
    assert storage_root("s3://bucket/ray") == "s3://bucket/ray"


def test_a_cluster_gets_the_endpoint_and_region_but_never_credentials(monkeypatch):
    """What `stride tune --address` hands a cluster's workers (its runtime env), and what Ray Tune may copy into its
    trials' runtime env, which Ray's runtime-env agent logs in plain text."""
    from ray.tune.execution import class_cache

    for name, value in {**TEST_CREDENTIALS, "AWS_SESSION_TOKEN": "token-1", "AWS_ENDPOINT_URL_S3": "http://minio:9000",
                        "AWS_REGION": "eu-west-1", "STRIDE_PLUGINS": "my_task"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    assert forwarded_env() == {"STRIDE_PLUGINS": "my_task", "AWS_ENDPOINT_URL_S3": "http://minio:9000",
                               "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-east-1"}
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", set(class_cache.ENV_VARS_TO_PROPAGATE))
    keep_credentials_out_of_ray()
    assert not class_cache.ENV_VARS_TO_PROPAGATE & CREDENTIAL_ENV and "PL_DISABLE_FORK" not in CREDENTIAL_ENV
    runtime_env = class_cache._ActorClassCache().get(type("Trainable", (), {}))._default_options["runtime_env"]
    assert not set(runtime_env["env_vars"]) & CREDENTIAL_ENV
