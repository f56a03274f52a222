"""Logging trained networks as MLflow PyTorch models, pickle-free.

Models are saved in MLflow's `pt2` format (torch.export): loading never unpickles
arbitrary objects. The signature's batch dimension is dynamic.
"""

from __future__ import annotations

import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from torch import nn


def inference_network(network: nn.Module) -> nn.Module:
    """Logits -> class probabilities, on CPU in eval mode: what predict and evaluate consume."""
    return nn.Sequential(network, nn.Softmax(dim=1)).cpu().eval()


def log_classifier(network: nn.Module, input_shape: tuple[int, ...], num_classes: int, name: str = "model") -> str:
    """Log into the active run; return the model URI (models:/<model_id>)."""
    import mlflow.pytorch

    model = inference_network(network)
    example = np.random.default_rng(0).random((2, *input_shape), dtype=np.float32)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *input_shape))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]))
    with torch.no_grad():
        info = mlflow.pytorch.log_model(model, name=name, signature=signature, input_example=example,
                                        serialization_format="pt2", pip_requirements=["torch", "numpy"])
    return info.model_uri
