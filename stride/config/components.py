"""Lightning callbacks and loggers named in a recipe (`callbacks:`, `loggers:`), checked and built.

A recipe names a class and its arguments; only Lightning's own public callbacks and loggers and the
ones a plugin registers (`register_component`) can be named, so a config never imports arbitrary code.
Arguments are checked against the constructor when the config is loaded, before anything trains.
`monitor` and `mode`, where a class takes them and the recipe leaves them out, are the run's own
(`trainer.monitor`, `trainer.monitor_mode`), so `{name: EarlyStopping, args: {patience: 3}}` just works.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Literal

from stride.errors import StrideError

Kind = Literal["callbacks", "loggers"]
LIGHTNING_MODULES: dict[str, str] = {"callbacks": "pytorch_lightning.callbacks", "loggers": "pytorch_lightning.loggers"}
_REGISTERED: dict[str, dict[str, type]] = {"callbacks": {}, "loggers": {}}


def register_component(kind: Kind, cls: type, name: str | None = None) -> type:
    """Make a callback or logger class of your own nameable in recipes (call it from a plugin module)."""
    _REGISTERED[kind][name or cls.__name__] = cls
    return cls


def component_classes(kind: Kind) -> dict[str, type]:
    module = importlib.import_module(LIGHTNING_MODULES[kind])
    public = {name: getattr(module, name) for name in getattr(module, "__all__", ())}
    return {**{n: c for n, c in public.items() if inspect.isclass(c)}, **_REGISTERED[kind]}


def _arguments(cls: type, args: dict[str, Any], monitor: str, mode: str) -> dict[str, Any]:
    parameters = inspect.signature(cls).parameters
    filled = dict(args)
    if "monitor" in parameters and "monitor" not in filled:
        filled["monitor"] = monitor
    if "mode" in parameters and "mode" not in filled and filled.get("monitor") == monitor:
        filled["mode"] = mode
    return filled


def check_components(kind: Kind, components: list[Any], monitor: str, mode: str) -> None:
    """Each named class exists and takes these arguments (StrideError naming `kind[i]` otherwise)."""
    if not components:
        return
    known = component_classes(kind)
    for index, component in enumerate(components):
        where = f"{kind}[{index}] ({component.name})"
        if component.name not in known:
            raise StrideError(f"{where}: unknown {kind[:-1]}; known: {', '.join(sorted(known))}")
        cls = known[component.name]
        try:
            inspect.signature(cls).bind(**_arguments(cls, component.args, monitor, mode))
        except TypeError as err:
            raise StrideError(f"{where}: {err} (its arguments: {inspect.signature(cls)})") from None


def build_components(kind: Kind, components: list[Any], monitor: str, mode: str) -> list[Any]:
    """Instances of the named classes (checked already when the config was loaded)."""
    known = component_classes(kind) if components else {}
    built = []
    for index, component in enumerate(components):
        cls = known[component.name]
        try:
            built.append(cls(**_arguments(cls, component.args, monitor, mode)))
        except Exception as err:  # e.g. a logger whose package is not installed
            raise StrideError(f"{kind}[{index}] ({component.name}): cannot be built: {err}") from None
    return built
