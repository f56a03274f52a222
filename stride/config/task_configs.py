"""Which config each task takes: its `StrideConfig` subclass (whose `data` holds the task's own options) and
the metric its runs are compared on by default.

Tasks register here when they are registered (`stride.tasks.register_task`), so the config layer validates
every task's options without importing a task; a name it does not know makes it look for tasks once
(`stride.plugins.discover`) before it reports the name as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stride.config.schema import DataConfig, StrideConfig
from stride.plugins import registered


@dataclass(frozen=True)
class TaskConfig:
    name: str
    config_class: type[StrideConfig]
    monitor: str  # trainer.monitor's default: the task's quality on the validation split
    monitor_mode: Literal["min", "max"]

    @property
    def data_options(self) -> type[DataConfig]:
        return self.config_class.model_fields["data"].annotation  # type: ignore[return-value]


_REGISTERED: dict[str, TaskConfig] = {}


def register_task_config(entry: TaskConfig) -> None:
    if entry.name in _REGISTERED and _REGISTERED[entry.name] != entry:
        raise ValueError(f"task {entry.name!r} registers a second config")
    _REGISTERED[entry.name] = entry


def task_config(name: str) -> TaskConfig:
    return registered(_REGISTERED, name, lambda names: f"unknown task {name!r}; registered tasks: {names}")


def registered_task_configs() -> list[TaskConfig]:
    from stride.plugins import discover

    discover()
    return [_REGISTERED[name] for name in sorted(_REGISTERED)]


def tasks_with_option(dotted: str) -> list[str]:
    """The registered tasks whose data options have `dotted` (e.g. 'augment.random_crop'), for error messages."""
    owners = []
    for entry in registered_task_configs():
        model: object = entry.data_options
        for part in dotted.split("."):
            fields = getattr(model, "model_fields", {})
            model = fields[part].annotation if part in fields else None
            if model is None:
                break
        else:
            owners.append(entry.name)
    return owners
