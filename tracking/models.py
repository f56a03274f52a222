"""Logging a task's exported network as an MLflow PyTorch model, pickle-free.

Models are saved in MLflow's `pt2` format (torch.export): loading never unpickles
arbitrary objects. The signature's batch dimension is dynamic.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from stride.tasks import ExportedModel
from stride.tracking.contract import MODEL_NAME
from stride.tracking.store import fluent_tracking_uri


def log_exported(model: ExportedModel, tracking_uri: str, run_id: str, name: str = MODEL_NAME) -> str:
    """Log as an output of run `run_id` (running or finished, no fluent run needed); return its URI
    (models:/<model_id>). The logged model is created in the run's experiment explicitly: MLflow would
    otherwise file a model logged outside an active run under the default experiment."""
    import mlflow.pytorch
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id,
                                        params=dict(run.data.params))
    dtype = np.dtype(model.inputs.dtype)
    example = np.random.default_rng(0).random((2, *model.inputs.shape)).astype(dtype)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(dtype, (-1, *model.inputs.shape))]),
        outputs=Schema([TensorSpec(np.dtype(model.outputs.dtype), (-1, *model.outputs.shape))]))
    with torch.no_grad(), warnings.catch_warnings():
        # nn.LSTM/GRU rebuild their `_flat_weights` list, of the very same parameters, while being traced;
        # torch.export reports that as attributes assigned during export. The graph is unaffected: the
        # exported model computes what the network does (tests/test_sequence_training.py).
        warnings.filterwarnings("ignore", message=r"The tensor attributes .*_flat_weights.* were assigned during "
                                                  "export")
        try:
            with fluent_tracking_uri(tracking_uri):  # where log_model's own client writes
                info = mlflow.pytorch.log_model(model.network, name=name, signature=signature, input_example=example,
                                                serialization_format="pt2", pip_requirements=["torch", "numpy"],
                                                model_id=logged.model_id, run_id=run_id)
        except BaseException:
            with contextlib.suppress(Exception):  # no PENDING model left behind; the original error matters more
                client.finalize_logged_model(logged.model_id, "FAILED")
            raise
    return info.model_uri
