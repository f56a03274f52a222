"""Logging a task's exported network as an MLflow PyTorch model, pickle-free, with the digest of every file.

Models are saved in MLflow's `pt2` format (torch.export): loading never unpickles
arbitrary objects. The signature's batch dimension is dynamic. The model is saved locally first and
the sha256 of each of its files recorded on the logged model (in the tracking store's database), so
that a reader can refuse a file changed or added in the artifact store (docs/registry.md, "Model integrity").
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec

from stride.serving import ExportedModel
from stride.tracking.contract import MODEL_FILES_TAG, MODEL_NAME
from stride.tracking.digests import encode_digests, folder_digests


def log_exported(model: ExportedModel, tracking_uri: str, run_id: str, name: str = MODEL_NAME) -> str:
    """Log as an output of run `run_id` (running or finished, no fluent run needed); return its URI
    (models:/<model_id>). The logged model is created in the run's experiment explicitly: MLflow would
    otherwise file a model logged outside an active run under the default experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id,
                                        params=dict(run.data.params))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / name
            save_exported(model, folder, Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                                               run_id=run_id, model_id=logged.model_id))
            client.set_logged_model_tags(logged.model_id, {MODEL_FILES_TAG: encode_digests(folder_digests(folder))})
            client.log_model_artifacts(logged.model_id, str(folder))
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    except BaseException:
        with contextlib.suppress(Exception):  # no PENDING model left behind; the original error matters more
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    return f"models:/{logged.model_id}"


def save_exported(model: ExportedModel, folder: Path, mlflow_model: Model) -> None:
    """The MLflow model (MLmodel, environment files, input example, `data/model.pt2`) written into `folder`."""
    import mlflow.pytorch

    dtype = np.dtype(model.inputs.dtype)
    example = np.random.default_rng(0).random((2, *(model.example_shape or model.inputs.shape))).astype(dtype)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(dtype, (-1, *model.inputs.shape))]),
        outputs=Schema([TensorSpec(np.dtype(model.outputs.dtype), (-1, *model.outputs.shape))]))
    with torch.no_grad(), warnings.catch_warnings():
        # nn.LSTM/GRU rebuild their `_flat_weights` list, of the very same parameters, while being traced;
        # torch.export reports that as attributes assigned during export. The graph is unaffected: the
        # exported model computes what the network does (tests/test_sequence_training.py).
        warnings.filterwarnings("ignore", message=r"The tensor attributes .*_flat_weights.* were assigned during "
                                                  "export")
        mlflow.pytorch.save_model(model.network, str(folder), mlflow_model=mlflow_model, signature=signature,
                                  input_example=example, serialization_format="pt2",
                                  pip_requirements=["torch", "numpy"])
