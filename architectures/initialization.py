"""Weight initialisations the seeds name (docs/models.md, B and D)."""

from __future__ import annotations

from typing import Literal, TypeVar

from torch import nn

_WEIGHTED = (nn.Conv2d, nn.Linear)
_Network = TypeVar("_Network", bound=nn.Module)


def he_normal_(network: _Network, conv_mode: Literal["fan_in", "fan_out"] = "fan_in") -> _Network:
    """He et al. 2015: weights ~ N(0, 2/n), biases 0.

    n is a convolution's fan-in (the CUDA thesis, eq. A.57: "incoming weight connections")
    or its fan-out (the authors' code of the ResNets, WRNs and DenseNets); linear layers use
    their fan-in.
    """
    for module in network.modules():
        if isinstance(module, _WEIGHTED):
            mode = conv_mode if isinstance(module, nn.Conv2d) else "fan_in"
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return network


def gaussian_(network: _Network, std: float) -> _Network:
    """Weights ~ N(0, std^2) and biases 0 (NiN, Table 4.2 of the CNN dissertation: std 0.05)."""
    for module in network.modules():
        if isinstance(module, _WEIGHTED):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return network
