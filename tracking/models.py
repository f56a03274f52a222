"""Logging a task's exported network as an MLflow PyTorch model, pickle-free.

Models are saved in MLflow's `pt2` format (torch.export): loading never unpickles
arbitrary objects. The signature's batch dimension is dynamic.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from stride.tasks import ExportedModel


def log_exported(model: ExportedModel, name: str = "model") -> str:
    """Log into the active run; return the model URI (models:/<model_id>)."""
    import mlflow.pytorch

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
        info = mlflow.pytorch.log_model(model.network, name=name, signature=signature, input_example=example,
                                        serialization_format="pt2", pip_requirements=["torch", "numpy"])
    return info.model_uri
