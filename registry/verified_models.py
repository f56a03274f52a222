"""Reading a logged model only as stride logged it: its files checked against the digests recorded in the
tracking store, then its exported program loaded with torch.export alone.

MLflow's loader would first put a `code` folder named by the model's MLmodel on `sys.path` and import the
pickle module named in `data/pickle_module_info.txt`, and `torch.export.load` unpickles what a `.pt2`
archive holds: whoever can write the artifact store could run code in every process that loads the model.
Here nothing is imported or unpickled from a model whose files differ in any way from those stride logged
(`stride.tracking.models.MODEL_FILES_TAG`). docs/registry.md, "Model integrity".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch
import yaml
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from stride.errors import StrideError
from stride.tracking.contract import MODEL_FILES_TAG, MODEL_NAME, MODEL_URI_TAG
from stride.tracking.digests import check_file, check_folder, decode_digests

MLMODEL = "MLmodel"
EXPORTED_PROGRAM = "data/model.pt2"  # where mlflow.pytorch saves a pt2 (torch.export) model
PICKLE_MODULE_FILE = "pickle_module_info.txt"  # MLflow imports the module it names before unpickling
# written by MLflow itself into a local artifact store's model folder whenever the model is loaded or downloaded
# by its models:/ URI (mlflow.store.artifact.models_artifact_repo); YAML that nothing here or in MLflow reads
MLFLOW_METADATA = frozenset({"registered_model_meta"})
_LOGGED = re.compile(r"^models:/(?P<id>m-[0-9a-f]+)$")
_RUN = re.compile(r"^runs:/(?P<run>[^/]+)/(?P<path>.+)$")
RELOG = "train it again and promote the new run: models and weights logged from now on record their digests"


@dataclass(frozen=True)
class LoggedFiles:
    """Where a logged model's files are and the sha256 of each, as the tracking store recorded them."""
    uri: str  # as the user gave it, for messages
    model_id: str
    location: str  # the logged model's artifact location
    run_id: str | None
    digests: dict[str, str]


def logged_files(client: MlflowClient, uri: str, version: ModelVersion | None) -> LoggedFiles:
    """The logged model behind `uri` (a registered `version` of it, if given) and its recorded digests."""
    model_id = _model_id(client, uri, version)
    try:
        logged = client.get_logged_model(model_id)
    except MlflowException as err:
        raise StrideError(f"model URI {uri}: logged model {model_id} not found ({err.message})") from None
    if MODEL_FILES_TAG not in logged.tags:
        raise StrideError(f"model {uri}: logged model {model_id} has no file digests (tag {MODEL_FILES_TAG}): it was "
                          "logged before stride recorded them, so its files cannot be told from ones planted in the "
                          f"artifact store; {RELOG}")
    return LoggedFiles(uri, model_id, logged.artifact_location, logged.source_run_id,
                       decode_digests(logged.tags[MODEL_FILES_TAG], f"model {uri}"))


def _model_id(client: MlflowClient, uri: str, version: ModelVersion | None) -> str:
    if version is not None:
        registered_from = _LOGGED.match(version.source or "")
        model_id = version.model_id or (registered_from["id"] if registered_from else None)
        if not model_id:
            raise StrideError(f"model {uri}: version {version.version} of {version.name!r} was registered from "
                              f"{version.source}, not from a model stride logged; promote with `stride promote`")
        return model_id
    if match := _LOGGED.match(uri):
        return match["id"]
    if match := _RUN.match(uri):
        return _run_model_id(client, uri, match["run"], match["path"].strip("/"))
    raise StrideError(f"model URI {uri!r} names no logged model")


def _run_model_id(client: MlflowClient, uri: str, run_id: str, path: str) -> str:
    """The model a run logged, as its tag in the tracking store names it (not what its artifacts hold)."""
    try:
        logged = _LOGGED.match(client.get_run(run_id).data.tags.get(MODEL_URI_TAG, ""))
    except MlflowException as err:
        raise StrideError(f"model URI {uri}: no run {run_id} ({err.message})") from None
    if not logged:
        raise StrideError(f"model URI {uri}: run {run_id} has no logged model (tag {MODEL_URI_TAG}); a run that "
                          "logged weights only gets one when promoted")
    if path != MODEL_NAME:
        raise StrideError(f"model URI {uri}: run {run_id}'s model is runs:/{run_id}/{MODEL_NAME}")
    return logged["id"]


def download(files: LoggedFiles, tracking_uri: str, folder: Path, artifact: str = "") -> Path:
    """The model's files (or one `artifact` of them) downloaded into `folder`; nothing is read yet."""
    location = f"{files.location.rstrip('/')}/{artifact}" if artifact else files.location
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(folder),
                                                        tracking_uri=tracking_uri))
    except (MlflowException, OSError) as err:
        raise StrideError(f"model {files.uri}: its files at {location} cannot be read ({err})") from None


def verified_mlmodel(files: LoggedFiles, tracking_uri: str, folder: Path) -> Path:
    """The model's MLmodel file, refused if it names code to run or is not the one stride logged."""
    path = download(files, tracking_uri, folder, MLMODEL)
    check_no_code(path, files.uri)
    check_file(path, files.digests.get(MLMODEL, ""), f"model {files.uri}: {MLMODEL}")
    return path


def verified_model_folder(files: LoggedFiles, tracking_uri: str, folder: Path) -> Path:
    """All the model's files, refused unless they are exactly the ones stride logged."""
    root = download(files, tracking_uri, folder)
    check_no_code(root / MLMODEL, files.uri)
    for info in root.rglob(PICKLE_MODULE_FILE):
        module = info.read_bytes()[:100].decode("utf-8", "replace").strip()
        raise StrideError(f"model {files.uri}: {info.relative_to(root).as_posix()} names the pickle module "
                          f"{module!r}, which MLflow would import; stride logs pickle-free pt2 models only, so "
                          "this file was planted in the artifact store: refusing to load the model")
    check_folder(root, files.digests, f"model {files.uri}", unread=MLFLOW_METADATA)
    return root


def check_no_code(mlmodel: Path, uri: str) -> None:
    """StrideError if any flavor of the MLmodel names a code folder (MLflow puts it on `sys.path`)."""
    try:
        flavors = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as err:
        raise StrideError(f"model {uri}: its {MLMODEL} file is not readable YAML ({err})") from None
    coded = {name: conf["code"] for name, conf in flavors.items() if isinstance(conf, dict) and conf.get("code")}
    if coded:
        named = ", ".join(f"{flavor}: {path!r}" for flavor, path in sorted(coded.items()))
        raise StrideError(f"model {uri}: its {MLMODEL} names a code path ({named}) that MLflow would import from; "
                          "stride never logs code with a model, so it was planted in the artifact store: refusing "
                          "to load the model")


def exported_program(root: Path) -> torch.nn.Module:
    """The network of a verified model folder, loaded with torch.export (no MLflow loader, no code path)."""
    return torch.export.load(root / EXPORTED_PROGRAM).module()
