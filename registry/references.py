"""What a model URI points at: its run, registry version, input shape and class names.

Accepted URIs: `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/m-<id>` (a logged
model) and `runs:/RUN_ID/PATH`. Class names come from the registered version's
`stride.class_names` tag (written at promotion), else from the labels file a task logs beside
its model (a captioner's vocabulary), else from the manifest of the dataset the run was trained
on, else they are the class indices.

A model is read only after its files are checked against the digests stride recorded when it logged
them (`stride.registry.verified_models`).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from stride.datamodules.manifest import read_manifest
from stride.errors import StrideError
from stride.registry.lock import is_lock
from stride.registry.verified_models import (
    LoggedFiles,
    exported_program,
    logged_files,
    verified_mlmodel,
    verified_model_folder,
)
from stride.tracking.contract import BEST_CHECKPOINT_TAG, CLASS_NAMES_TAG, DATASET_PATH_TAG, TASK_TAG
from stride.tracking.digests import download_verified

log = logging.getLogger(__name__)

URI_FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-<id> or runs:/RUN_ID/model"
_REGISTERED = re.compile(r"^models:/(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass
class ModelReference:
    uri: str
    run_id: str | None
    input_shape: tuple[int, ...]  # without the batch dimension
    num_classes: int | None
    files: LoggedFiles  # the logged model behind an alias, so later alias moves cannot change what is loaded
    tracking_uri: str
    task: str = "classification"  # the training run's task (stride.task), which knows how to use the model
    registered_name: str | None = None
    version: str | None = None
    version_tags: dict[str, str] = field(default_factory=dict)


def _registered_version(client: MlflowClient, uri: str):
    match = _REGISTERED.match(uri)
    if not match:  # models:/m-<id>, a logged model
        return None
    name = match["name"]
    try:
        client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models() if not is_lock(m))
        raise StrideError(f"model URI {uri}: no registered model {name!r} (registered: "
                          f"{', '.join(known) or 'none'}; see `stride registry list`)") from None
    try:
        if match["alias"]:
            return client.get_model_version_by_alias(name, match["alias"])
        return client.get_model_version(name, match["version"])
    except MlflowException:
        aliases = client.get_registered_model(name).aliases
        have = ", ".join(f"@{a} (v{v})" for a, v in sorted(aliases.items())) or "no aliases"
        missing = f"alias @{match['alias']}" if match["alias"] else f"version {match['version']}"
        raise StrideError(f"model URI {uri}: model {name!r} has no {missing} (it has {have})") from None


def describe_model(client: MlflowClient, uri: str) -> ModelReference:
    """Resolve `uri` (its MLmodel verified, no weights downloaded); StrideError for malformed or unknown URIs."""
    if not uri.startswith(("models:/", "runs:/")):
        raise StrideError(f"model URI {uri!r} is not supported (use {URI_FORMS})")
    version = _registered_version(client, uri) if uri.startswith("models:/") else None
    files = logged_files(client, uri, version)
    with tempfile.TemporaryDirectory() as tmp:
        signature = Model.load(verified_mlmodel(files, client.tracking_uri, Path(tmp))).signature
    if signature is None or not signature.inputs.inputs or signature.inputs.inputs[0].shape is None:
        raise StrideError(f"model {uri} has no tensor input signature; log it with stride (tracking.log_model)")
    input_shape = tuple(int(d) for d in signature.inputs.inputs[0].shape[1:])
    outputs = signature.outputs.inputs if signature.outputs else []
    num_classes = int(outputs[0].shape[-1]) if outputs and getattr(outputs[0], "shape", None) else None
    if num_classes is not None and num_classes < 0:  # outputs of any size (a stylised image): no classes there
        num_classes = None
    run_id = (version.run_id if version else None) or files.run_id
    task = (version.tags.get(TASK_TAG) if version else None) or _run_tag(client, run_id, TASK_TAG) or "classification"
    return ModelReference(uri=uri, run_id=run_id, input_shape=input_shape, num_classes=num_classes, files=files,
                          tracking_uri=client.tracking_uri, task=task,
                          registered_name=version.name if version else None,
                          version=str(version.version) if version else None,
                          version_tags=dict(version.tags) if version else {})


def _run_tag(client: MlflowClient, run_id: str | None, key: str) -> str | None:
    if not run_id:
        return None
    try:
        return client.get_run(run_id).data.tags.get(key)
    except MlflowException:
        return None


def load_network(ref: ModelReference) -> torch.nn.Module:
    """The logged inference network (softmax included), on CPU, once its files proved to be the ones logged."""
    with tempfile.TemporaryDirectory() as tmp:
        return exported_program(verified_model_folder(ref.files, ref.tracking_uri, Path(tmp)))


def load_model(model_uri: str, tracking_uri: str | None = None) -> torch.nn.Module:
    """Any model URI stride accepts as its network, verified as `stride predict` verifies it (from Python:
    MLflow's own loader would run code planted in the artifact store)."""
    from stride.registry.client import connect

    return load_network(describe_model(connect(tracking_uri), model_uri))


def class_names(client: MlflowClient, ref: ModelReference) -> list[str]:
    if CLASS_NAMES_TAG in ref.version_tags:
        return json.loads(ref.version_tags[CLASS_NAMES_TAG])
    from stride.serving import get_serving

    if labels := get_serving(ref.task).labels_artifact:
        return logged_labels(client, ref, labels)
    names: list[str] = []
    if ref.run_id:
        try:
            path = client.get_run(ref.run_id).data.tags.get(DATASET_PATH_TAG)
            names = read_manifest(path).class_names if path else []
        except (MlflowException, StrideError) as err:
            log.info("class names of %s unavailable (%s); using indices", ref.uri, err)
    if ref.num_classes and len(names) != ref.num_classes:
        names = [str(i) for i in range(ref.num_classes)]
    return names


def logged_labels(client: MlflowClient, ref: ModelReference, artifact: str) -> list[str]:
    """The words of the JSON labels file (`{"words": [...]}`) logged in the model's run."""
    if not ref.run_id:
        raise StrideError(f"model {ref.uri}: no training run is recorded for it, so no {artifact} to read its "
                          "outputs with")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=ref.run_id, artifact_path=artifact, dst_path=tmp,
                                                       tracking_uri=client.tracking_uri)
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (MlflowException, OSError) as err:
            raise StrideError(f"model {ref.uri}: its run {ref.run_id} has no readable {artifact} ({err})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StrideError(f"model {ref.uri}: {artifact} of run {ref.run_id} is not JSON ({err})") from None
    words = data.get("words") if isinstance(data, dict) else None
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise StrideError(f"model {ref.uri}: {artifact} of run {ref.run_id} holds no 'words' list of strings")
    return words


def download_module(client: MlflowClient, ref: ModelReference, folder: Path) -> Path:
    """The weights-only checkpoint (`weights/module.pt`) logged beside the model, downloaded into `folder` and
    checked against the sha256 its run recorded."""
    from stride.tracking.contract import MODULE_ARTIFACT, MODULE_SHA256_TAG

    if ref.run_id is None:
        raise StrideError(f"model {ref.uri}: no training run is recorded for it, so no weights to rebuild it "
                          "from; pass its checkpoint with --checkpoint PATH")
    return download_verified(client.tracking_uri, ref.run_id, MODULE_ARTIFACT, _run_tag(client, ref.run_id,
                             MODULE_SHA256_TAG), folder, f"model {ref.uri}",
                             hint="; runs logged before stride logged it lack it: retrain, or pass the run's "
                                  f"checkpoint (its tag {BEST_CHECKPOINT_TAG}) with --checkpoint PATH")
