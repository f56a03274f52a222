"""The single map from architecture names to network builders.

A builder is a plain function returning an `nn.Module`. It takes two keyword-only,
data-derived arguments, `input_shape` (per-sample, e.g. (1, 28, 28) or (1, 784)) and
`num_classes`, plus its own hyper-parameters with type annotations and defaults. The
hyper-parameters are what users write under `model:` in a config and what searches
sample; the registry derives a pydantic model from the signature so a typo or a wrong
type fails before anything runs.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic
from torch import nn

from stride.errors import StrideError

DATA_DERIVED_ARGS = ("input_shape", "num_classes")


@dataclass(frozen=True)
class Architecture:
    name: str
    task: str
    builder: Callable[..., nn.Module]
    summary: str
    params_model: type[pydantic.BaseModel]

    @property
    def param_names(self) -> list[str]:
        return list(self.params_model.model_fields)


_ARCHITECTURES: dict[str, Architecture] = {}


def _params_model(name: str, builder: Callable[..., nn.Module]) -> type[pydantic.BaseModel]:
    fields: dict[str, Any] = {}
    hints = typing.get_type_hints(builder, include_extras=True)  # resolves postponed annotations
    for param in inspect.signature(builder).parameters.values():
        if param.name in DATA_DERIVED_ARGS:
            continue
        if param.name not in hints or param.default is inspect.Parameter.empty:
            raise TypeError(f"builder of {name!r}: hyper-parameter {param.name!r} needs a type and a default")
        fields[param.name] = (hints[param.name], param.default)
    config = pydantic.ConfigDict(extra="forbid", strict=False, arbitrary_types_allowed=True, allow_inf_nan=False)
    return pydantic.create_model(f"{name}_params", __config__=config, **fields)


def register(name: str, *, task: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder to the registry under `name` for `task`."""

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is registered twice")
        summary = (inspect.getdoc(builder) or "").split("\n")[0]
        _ARCHITECTURES[name] = Architecture(name, task, builder, summary, _params_model(name, builder))
        return builder

    return add


def names(task: str | None = None) -> list[str]:
    return sorted(n for n, a in _ARCHITECTURES.items() if task is None or a.task == task)


def get(name: str) -> Architecture:
    if name not in _ARCHITECTURES:  # a plugin's network, not imported yet
        from stride.plugins import load_plugins

        load_plugins()
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise StrideError(f"unknown architecture {name!r}; registered: {', '.join(names())}") from None


def validate_params(name: str, params: dict[str, Any], where: str = "model") -> dict[str, Any]:
    """Return the architecture's hyper-parameters with defaults filled in, or raise naming the bad key."""
    arch = get(name)
    try:
        return arch.params_model(**params).model_dump()
    except pydantic.ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                problems.append(f"{where}.{key}: not a hyper-parameter of {name!r} "
                                f"(allowed: {', '.join(arch.param_names) or 'none'})")
            else:
                problems.append(f"{where}.{key}: {e['msg']} (got {e.get('input')!r})")
        raise StrideError("; ".join(problems)) from None


def build(name: str, *, input_shape: tuple[int, ...], num_classes: int, **params: Any) -> nn.Module:
    arch = get(name)
    return arch.builder(input_shape=tuple(input_shape), num_classes=num_classes, **validate_params(name, params))


def weight_count(module: nn.Module) -> int:
    """Weights of conv and linear layers only, no biases or normalisation: how the seeds count."""
    return sum(m.weight.numel() for m in module.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and m.weight is not None)
