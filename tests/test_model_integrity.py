"""A logged model is loaded only as stride logged it. Files planted in or changed in the artifact store (a code
folder named by the MLmodel, a pickle module, a changed exported program or weights, an extra file) are refused
by `stride predict`, `stride evaluate`, `stride promote` and `stride explain` before any of them runs; models
and weights logged without digests are refused with what to do instead."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient
from test_registry_support import registry_state, stride

from stride.registry import load_model, promote_best, write_sample_images
from stride.registry.verified_models import EXPORTED_PROGRAM
from stride.tracking.contract import MODEL_FILES_TAG, MODULE_ARTIFACT, MODULE_SHA256_TAG
from stride.tracking.digests import file_sha256, folder_digests

pytestmark = pytest.mark.slow  # end to end: real Lightning and a real MLflow server

EXPERIMENT = "integrity-tests"
MODEL = "integrity"
CHAMPION = f"models:/{MODEL}@champion"
PLANTED = "stride_planted"  # the module an attacker plants; importing it writes the marker file


@dataclass(frozen=True)
class Logged:
    run_id: str  # logged its model (tracking.log_model=true)
    model_id: str
    location: str  # the logged model's artifact location
    pristine: Path  # its files as logged
    deferred_run_id: str  # logged weights only
    marker: Path  # exists once anything planted ran


def train_run(server: str, shards: Path, workdir: Path, *overrides: str) -> str:
    from stride.config import load_config
    from stride.pipelines.train import train_and_record

    config = load_config("digits-cnn", [f"data.path={shards}", "model.channels=8", "trainer.max_epochs=1",
                                        "data.batch_size=128", f"trainer.checkpoint_dir={workdir / 'checkpoints'}",
                                        "trainer.enable_progress_bar=false", f"tracking.experiment={EXPERIMENT}",
                                        *overrides])
    return train_and_record(config, tracking_uri=server).run_id


@pytest.fixture(scope="module")
def logged(mlflow_server: str, digits_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Logged:
    workdir = tmp_path_factory.mktemp("integrity")
    run_id = train_run(mlflow_server, digits_shards, workdir)
    deferred_run_id = train_run(mlflow_server, digits_shards, workdir, "tracking.log_model=deferred")
    promote_best(mlflow_server, run_id=run_id, model_name=MODEL)  # the champion, registered while untouched
    client = MlflowClient(mlflow_server)
    model_id = client.get_run(run_id).data.tags["stride.model_uri"].removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    pristine = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(workdir / "pristine"),
                                                        tracking_uri=mlflow_server))
    return Logged(run_id, model_id, location, pristine, deferred_run_id, workdir / "planted-code-ran")


# -- what an attacker with write access to the artifact store plants --------------------------------------------
def planted_module(marker: Path) -> str:
    return f"from pathlib import Path\nPath({str(marker)!r}).write_text('planted code ran')\n"


def plant_code_path(pristine: Path, plant: Path, marker: Path) -> None:
    """MLmodel names a code folder holding the pickle module MLflow imports before loading `data/model.pth`."""
    mlmodel = yaml.safe_load((pristine / "MLmodel").read_text())
    for flavor in mlmodel["flavors"].values():
        flavor["code"] = "code"
    (plant / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    plant_pickle_module(pristine, plant, marker)


def plant_pickle_module(pristine: Path, plant: Path, marker: Path) -> None:
    (plant / "code").mkdir()
    (plant / "code" / f"{PLANTED}.py").write_text(planted_module(marker))
    (plant / "data").mkdir(exist_ok=True)
    (plant / "data" / "pickle_module_info.txt").write_text(PLANTED)
    (plant / "data" / "model.pth").write_bytes(b"anything")


class Payload:
    """Unpickled by torch.export.load: a pt2 archive's sample inputs are read with weights_only=False on failure."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (planted_module(self.marker),)


def changed_program(program: Path, marker: Path) -> bytes:
    """The exported program with its sample inputs replaced by a pickle that runs code."""
    payload = io.BytesIO()
    torch.save(Payload(marker), payload)
    out = io.BytesIO()
    with zipfile.ZipFile(program) as source, zipfile.ZipFile(out, "w") as changed:
        for info in source.infolist():
            changed.writestr(info, payload.getvalue() if "sample_inputs/" in info.filename else source.read(info))
    return out.getvalue()


def plant_changed_program(pristine: Path, plant: Path, marker: Path) -> None:
    (plant / "data").mkdir()
    (plant / EXPORTED_PROGRAM).write_bytes(changed_program(pristine / EXPORTED_PROGRAM, marker))


def plant_extra_file(pristine: Path, plant: Path, marker: Path) -> None:
    (plant / "code").mkdir()
    (plant / "code" / f"{PLANTED}.py").write_text(planted_module(marker))


PLANTS = {  # variant -> (what to plant, what the refusal says)
    "code path": (plant_code_path, "its MLmodel names a code path (python_function: 'code', pytorch: 'code')"),
    "pickle module": (plant_pickle_module, f"data/pickle_module_info.txt names the pickle module '{PLANTED}'"),
    "changed program": (plant_changed_program, "data/model.pt2 has sha256"),
    "extra file": (plant_extra_file, f"holds files stride did not log: code/{PLANTED}.py"),
}


@contextlib.contextmanager
def planted(server: str, logged: Logged, variant: str, workdir: Path) -> Iterator[None]:
    """`variant` written into the logged model's folder in the artifact store, for the block; then undone."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    plant = workdir / "plant"
    plant.mkdir()
    PLANTS[variant][0](logged.pristine, plant, logged.marker)
    client = MlflowClient(server)
    client.log_model_artifacts(logged.model_id, str(plant))
    try:
        yield
    finally:
        repository = get_artifact_repository(logged.location, tracking_uri=server)
        for path in (p.relative_to(plant) for p in plant.rglob("*")):
            if not (logged.pristine / path).exists() and (logged.pristine / path.parent).exists():
                repository.delete_artifacts(path.as_posix())  # what the plant added: a file, or a whole folder
        client.log_model_artifacts(logged.model_id, str(logged.pristine))
        restored = Path(mlflow.artifacts.download_artifacts(artifact_uri=logged.location, tracking_uri=server,
                                                            dst_path=str(workdir / "restored")))
        assert folder_digests(restored) == folder_digests(logged.pristine)


@pytest.fixture
def digit(digits_shards: Path, tmp_path: Path) -> Path:
    return write_sample_images(digits_shards, tmp_path / "digits", count=1)[0][0]


# -- the plants are real: MLflow's loader, or torch.export.load on its own, runs them -------------------------
def test_the_planted_code_path_runs_under_mlflows_own_loader(mlflow_server, logged, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # MLflow prepends the planted code folder for good
    import mlflow.pytorch

    with planted(mlflow_server, logged, "code path", tmp_path):
        with contextlib.suppress(Exception):  # its model.pth is no model; the import came first
            mlflow.pytorch.load_model(f"models:/{logged.model_id}")
    sys.modules.pop(PLANTED, None)
    assert logged.marker.read_text() == "planted code ran"
    logged.marker.unlink()


def test_a_changed_exported_program_runs_code_under_torch_export_load(logged, tmp_path):
    program = tmp_path / "model.pt2"
    program.write_bytes(changed_program(logged.pristine / EXPORTED_PROGRAM, logged.marker))
    with contextlib.suppress(Exception):
        torch.export.load(program)
    assert logged.marker.read_text() == "planted code ran"
    logged.marker.unlink()


# -- stride refuses every plant, and nothing of it runs --------------------------------------------------------
def test_logging_records_the_sha256_of_every_file_in_the_tracking_store(mlflow_server, logged, tmp_path):
    client = MlflowClient(mlflow_server)
    recorded = json.loads(client.get_logged_model(logged.model_id).tags[MODEL_FILES_TAG])
    assert recorded == folder_digests(logged.pristine) and EXPORTED_PROGRAM in recorded and "MLmodel" in recorded
    for run_id in (logged.run_id, logged.deferred_run_id):
        weights = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MODULE_ARTIFACT,
                                                      dst_path=str(tmp_path / run_id), tracking_uri=mlflow_server)
        assert client.get_run(run_id).data.tags[MODULE_SHA256_TAG] == file_sha256(weights)


@pytest.mark.parametrize("variant", list(PLANTS))
def test_predict_refuses_a_planted_model_and_runs_nothing(variant, mlflow_server, logged, digit, tmp_path, capsys):
    with planted(mlflow_server, logged, variant, tmp_path):
        code, out, err = stride(capsys, "predict", "--model", CHAMPION, digit, "--tracking-uri", mlflow_server)
    assert code == 2 and f"model {CHAMPION}" in err and PLANTS[variant][1] in err and out == "", err
    assert not logged.marker.exists()
    code, _, err = stride(capsys, "predict", "--model", CHAMPION, digit, "--tracking-uri", mlflow_server)
    assert code == 0, err  # undone, the model is served again


@pytest.mark.parametrize("variant", list(PLANTS))
def test_evaluate_refuses_a_planted_model_and_runs_nothing(variant, mlflow_server, logged, digits_shards, tmp_path,
                                                           capsys):
    with planted(mlflow_server, logged, variant, tmp_path):
        code, out, err = stride(capsys, "evaluate", "--model", CHAMPION, "--data", digits_shards,
                                "--tracking-uri", mlflow_server)
    assert code == 2 and f"model {CHAMPION}" in err and PLANTS[variant][1] in err and out == "", err
    assert not logged.marker.exists()


@pytest.mark.parametrize("variant", list(PLANTS))
def test_promote_refuses_a_planted_model_and_registers_nothing(variant, mlflow_server, logged, tmp_path, capsys):
    before = registry_state(mlflow_server)
    with planted(mlflow_server, logged, variant, tmp_path):
        code, out, err = stride(capsys, "promote", "--run", logged.run_id, "--model-name", f"{MODEL}-challenger",
                                "--tracking-uri", mlflow_server)
    assert code == 2 and f"model models:/{logged.model_id}" in err and PLANTS[variant][1] in err, err
    assert not logged.marker.exists() and registry_state(mlflow_server) == before


@pytest.mark.parametrize("uri", ["runs:/{run}/model", "models:/{model}", f"models:/{MODEL}/1", CHAMPION])
def test_every_model_uri_form_is_verified(uri, mlflow_server, logged, digit, tmp_path, capsys):
    uri = uri.format(run=logged.run_id, model=logged.model_id)
    with planted(mlflow_server, logged, "changed program", tmp_path):
        code, _, err = stride(capsys, "predict", "--model", uri, digit, "--tracking-uri", mlflow_server)
    assert code == 2 and f"model {uri}: data/model.pt2 has sha256" in err, err
    assert not logged.marker.exists()


def test_explain_refuses_changed_weights_and_a_changed_program(mlflow_server, logged, digit, tmp_path, capsys):
    client = MlflowClient(mlflow_server)
    argv = ["explain", "--model", CHAMPION, digit, "--out", tmp_path / "cams", "--tracking-uri", mlflow_server]
    with planted(mlflow_server, logged, "changed program", tmp_path):
        code, _, err = stride(capsys, *argv)
    assert code == 2 and "data/model.pt2 has sha256" in err and not logged.marker.exists(), err
    with changed_weights(client, logged.run_id, tmp_path):
        code, _, err = stride(capsys, *argv)
    assert code == 2 and f"model {CHAMPION}: {MODULE_ARTIFACT} of run {logged.run_id} has sha256" in err, err
    assert not (tmp_path / "cams").exists()


@contextlib.contextmanager
def changed_weights(client: MlflowClient, run_id: str, workdir: Path) -> Iterator[None]:
    """The run's weights/module.pt replaced, in the artifact store, by other weights stride could read."""
    folder, name = MODULE_ARTIFACT.rsplit("/", 1)
    original = Path(client.download_artifacts(run_id, MODULE_ARTIFACT, str(workdir / "original")))
    state = torch.load(original, weights_only=True)
    state["state_dict"] = {key: torch.zeros_like(value) for key, value in state["state_dict"].items()}
    changed = workdir / "changed" / name
    changed.parent.mkdir()
    torch.save(state, changed)
    client.log_artifact(run_id, str(changed), folder)
    try:
        yield
    finally:
        client.log_artifact(run_id, str(original), folder)


def test_promote_refuses_to_export_changed_weights(mlflow_server, logged, tmp_path, capsys):
    client = MlflowClient(mlflow_server)
    before = registry_state(mlflow_server)
    with changed_weights(client, logged.deferred_run_id, tmp_path):
        code, _, err = stride(capsys, "promote", "--run", logged.deferred_run_id, "--model-name", f"{MODEL}-deferred",
                              "--tracking-uri", mlflow_server)
    assert code == 2 and f"{MODULE_ARTIFACT} of run {logged.deferred_run_id} has sha256" in err, err
    assert "stride.model_uri" not in client.get_run(logged.deferred_run_id).data.tags  # nothing exported
    assert registry_state(mlflow_server) == before


def test_models_and_weights_logged_without_digests_are_refused_with_what_to_do(mlflow_server, logged, digit, capsys):
    client = MlflowClient(mlflow_server)
    recorded = client.get_logged_model(logged.model_id).tags[MODEL_FILES_TAG]
    client.delete_logged_model_tag(logged.model_id, MODEL_FILES_TAG)
    try:
        code, _, err = stride(capsys, "predict", "--model", CHAMPION, digit, "--tracking-uri", mlflow_server)
    finally:
        client.set_logged_model_tags(logged.model_id, {MODEL_FILES_TAG: recorded})
    assert code == 2 and f"logged model {logged.model_id} has no file digests" in err and "train it again" in err, err
    weights = client.get_run(logged.deferred_run_id).data.tags[MODULE_SHA256_TAG]
    client.delete_tag(logged.deferred_run_id, MODULE_SHA256_TAG)
    try:
        code, _, err = stride(capsys, "promote", "--run", logged.deferred_run_id, "--model-name", f"{MODEL}-old",
                              "--tracking-uri", mlflow_server)
    finally:
        client.set_tag(logged.deferred_run_id, MODULE_SHA256_TAG, weights)
    assert code == 2 and f"run {logged.deferred_run_id} recorded no sha256 of its {MODULE_ARTIFACT}" in err, err


def test_a_champion_logged_without_digests_is_replaced_only_with_force(mlflow_server, logged, tmp_path, capsys):
    from stride.serving import get_serving
    from stride.tasks import DataFacts
    from stride.tracking.models import log_exported
    from stride.training.checkpoints import load_module

    client = MlflowClient(mlflow_server)
    config, module = load_module(client.download_artifacts(logged.deferred_run_id, MODULE_ARTIFACT, str(tmp_path)))
    exported = get_serving(config.task).export(module, DataFacts.from_dict(module.hparams["stride"]["data"]))
    old_uri = log_exported(exported, mlflow_server, logged.deferred_run_id)
    client.delete_logged_model_tag(old_uri.removeprefix("models:/"), MODEL_FILES_TAG)  # as logged before digests
    name = f"{MODEL}-old"
    client.create_registered_model(name)
    version = client.create_model_version(name, source=old_uri, run_id=logged.deferred_run_id,
                                          model_id=old_uri.removeprefix("models:/"))
    client.set_registered_model_alias(name, "champion", version.version)
    argv = ["promote", "--run", logged.run_id, "--model-name", name, "--tracking-uri", mlflow_server]
    code, _, err = stride(capsys, *argv)
    assert code == 2 and "the champion (version 1) cannot be compared" in err and "has no file digests" in err, err
    code, out, err = stride(capsys, *argv, "--force")
    assert code == 0 and "registered: integrity-old version 2 -> @champion" in out, err


def test_the_file_mlflow_itself_writes_into_a_local_store_is_not_taken_for_tampering(tmp_path):
    """Loading a model by its models:/ URI from a local artifact store (stride's default store) makes MLflow write
    `registered_model_meta` into the stored model's folder; stride, which never reads it, still loads the model."""
    import mlflow.pytorch

    from stride.serving import ExportedModel, TensorSpec
    from stride.tracking.models import log_exported
    from stride.tracking.store import fluent_tracking_uri

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("local", artifact_location=(tmp_path / "mlartifacts").as_uri())
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1)).eval()
    model_uri = log_exported(ExportedModel(network, TensorSpec((1, 2, 2)), TensorSpec((3,))), uri,
                             client.create_run(experiment_id).info.run_id)
    with fluent_tracking_uri(uri):
        mlflow.pytorch.load_model(model_uri)
    model_id = model_uri.removeprefix("models:/")
    assert (tmp_path / "mlartifacts" / "models" / model_id / "artifacts" / "registered_model_meta").is_file()
    inputs = torch.rand(2, 1, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(load_model(model_uri, uri)(inputs), network(inputs))
