"""Hyper-parameter types the builders share; the registry turns them into config validation."""

from __future__ import annotations

from typing import Annotated

import pydantic

DropProbability = Annotated[float, pydantic.Field(ge=0.0, lt=1.0)]  # nn.Dropout's p: the chance to drop a unit
KeepProbability = Annotated[float, pydantic.Field(gt=0.0, le=1.0)]  # the CUDA thesis's p: the chance to keep it
Fraction = Annotated[float, pydantic.Field(gt=0.0, le=1.0)]
