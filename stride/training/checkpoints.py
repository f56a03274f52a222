"""Reading stride's Lightning checkpoints without unpickling, and rebuilding a module from one alone.

Every checkpoint carries `hyper_parameters.stride`: the resolved config (task, architecture
and its hyper-parameters, optimiser, ...) and the dataset facts the network was built for
(input shape, classes, normalisation), all plain data, so `torch.load(weights_only=True)`
reads it and the task rebuilds the exact module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from stride.config.loading import validate
from stride.config.schema import StrideConfig
from stride.errors import StrideError
from stride.tasks import DataFacts, get_task


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """`mmap`: tensors stay on disk until read (for a look at the checkpoint's bookkeeping only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        raise StrideError(f"checkpoint {path} cannot be loaded as stride weights: {err}") from None


def resumed_epoch(path: str | Path) -> int:
    """The training epoch a run resumed from this Lightning checkpoint starts with: the epochs whose
    training had finished, as Lightning counts them for its samplers (`epoch_progress.current.processed`)."""
    state = read_checkpoint(path, mmap=True)
    try:
        return int(state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError) as err:
        raise StrideError(f"checkpoint {path} has no training progress (loops.fit_loop.epoch_progress: {err}); "
                          "resume from a checkpoint Lightning wrote while training") from None


def load_weights(module: torch.nn.Module, path: str | Path) -> None:
    state = read_checkpoint(path)
    try:
        module.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError) as err:
        raise StrideError(f"checkpoint {path} does not fit this network: {err}") from None


def describe_checkpoint(path: str | Path) -> tuple[StrideConfig, DataFacts]:
    """The config and dataset facts a checkpoint was trained with."""
    state = read_checkpoint(path)
    try:
        description = state["hyper_parameters"]["stride"]
        config = validate(description["config"], f"checkpoint {path}", stored=True)
        return config, DataFacts.from_dict(description["data"])
    except (KeyError, TypeError) as err:
        raise StrideError(f"checkpoint {path} does not describe itself (no hyper_parameters.stride.{err}); "
                          "was it written by stride?") from None


# hyper-parameters naming a file that only initialises part of a network (model.backbone_weights of the face
# detectors, model.encoder_weights of the captioners): a checkpoint holds every weight, so a module rebuilt
# from it reads no such file, which need not exist where the checkpoint is loaded (another machine, later)
INITIAL_WEIGHTS_SUFFIX = "_weights"


def load_module(path: str | Path) -> tuple[StrideConfig, pl.LightningModule]:
    """The trained LightningModule of a checkpoint, from the checkpoint alone."""
    config, facts = describe_checkpoint(path)
    for key, value in config.model.params.items():
        if key.endswith(INITIAL_WEIGHTS_SUFFIX) and value is not None:
            setattr(config.model, key, None)
    module = get_task(config.task).module(config, facts)
    load_weights(module, path)
    return config, module
