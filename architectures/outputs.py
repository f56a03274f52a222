"""What a network may return while training besides plain logits.

GoogLeNet's auxiliary classifiers add their losses, weighted 0.3, to the main loss during
training and are discarded at test time (docs/models.md, C). A network with such heads
returns `AuxiliaryLogits` in training mode and plain logits in eval mode, so export,
evaluation and class activation maps never see the difference; the classification module's
loss reads the weight from the output.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class AuxiliaryLogits(NamedTuple):
    logits: Tensor
    auxiliary: tuple[Tensor, ...]
    auxiliary_weight: float
