"""What the `auto` speed options mean on the machine at hand, shared by the training core and the bare loop of
`stride bench`.

- precision `auto`: bf16-mixed on CUDA GPUs that support it (Ampere and later), 32-true
  elsewhere (bf16 on a CPU is slower than float32, and fp16 needs loss scaling);
- channels_last `auto`: on for networks with 2-d convolutions on a GPU, where cuDNN's
  NHWC kernels are faster; a no-op for the 1-d convolutions of TCNs;
- compile: off unless asked (compilation costs tens of seconds per run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import torch
from torch import nn

from stride.config.schema import TrainerConfig

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def uses_cuda(trainer: TrainerConfig) -> bool:
    if trainer.accelerator in ("gpu", "cuda"):
        return torch.cuda.is_available()
    return trainer.accelerator == "auto" and torch.cuda.is_available()


def resolve_precision(trainer: TrainerConfig) -> str:
    if trainer.precision != "auto":
        return trainer.precision
    return "bf16-mixed" if uses_cuda(trainer) and torch.cuda.is_bf16_supported() else "32-true"


def resolve_channels_last(trainer: TrainerConfig, network: nn.Module) -> bool:
    if trainer.channels_last != "auto":
        return bool(trainer.channels_last)
    return uses_cuda(trainer) and any(isinstance(m, nn.Conv2d) for m in network.modules())


def prepare_network(network: nn.Module, trainer: TrainerConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply channels_last in place; return what to call in training (the compiled forward if asked).

    Compiling the bound `forward` rather than the module keeps parameter names (and so
    checkpoints and the exported model) exactly as without compilation.
    """
    if resolve_channels_last(trainer, network):
        network.to(memory_format=torch.channels_last)
    return torch.compile(network.forward) if trainer.compile else network


def apply_speed_options(module: ModuleT, trainer: TrainerConfig) -> ModuleT:
    """The same for a LightningModule holding its backbone as `.network` (e.g. ClassificationModule)."""
    network = cast(nn.Module, module.network)
    forward = prepare_network(network, trainer)
    if forward is not network:
        # torch types Module.__setattr__'s value as Tensor | Module, but any attribute may be set
        module.compiled_forward = forward  # type: ignore[assignment]
    return module
