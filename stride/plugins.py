"""Finding what registers itself: stride's own tasks, serving code and architectures by scanning their packages,
anyone else's through the `stride.plugins` entry-point group or $STRIDE_PLUGINS.

A plugin is a module that registers things when imported (a task, its serving code, an architecture, a callback).
Installed packages declare it as an entry point (`[project.entry-points."stride.plugins"] mine = "my_pkg.stride"`);
a module or a `.py` file not installed is named in $STRIDE_PLUGINS (comma-separated), which stride's Ray jobs pass
on to their workers. The lookups that meet an unknown name (`task_config`, `get_task`, `get_serving`, the
architecture registry) call `discover` once before they give up, so nothing imports a registry by hand.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TypeVar

from stride.errors import StrideError

PLUGINS_ENV = "STRIDE_PLUGINS"
ENTRY_POINT_GROUP = "stride.plugins"
# stride's own packages of registered things, scanned module by module (none imports another's registry)
BUILT_IN = ("stride.architectures", "stride.tasks", "stride.serving")

_loaded: set[str] = set()
T = TypeVar("T")


def import_submodules(package: str) -> None:
    """Import every module of `package` (each registers what it defines)."""
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def plugin_module_name(path: str) -> str:
    """The module name of a plugin file: the same in every process (objects of its classes are pickled by it)."""
    return "stride_plugin_" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]


def _plugin_files() -> dict[str, str]:
    items = (part.strip() for part in os.environ.get(PLUGINS_ENV, "").split(","))
    return {plugin_module_name(item): os.path.abspath(item) for item in items if item.endswith(".py")}


class _PluginFileFinder(importlib.abc.MetaPathFinder):
    """Imports a plugin file by its module name, so that unpickling an object of a plugin's class works in a
    process that has not loaded the plugins yet (a Ray worker given a trial's config)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        file = _plugin_files().get(name)
        return importlib.util.spec_from_file_location(name, file) if file else None


def install_plugin_finder() -> None:
    if not any(isinstance(finder, _PluginFileFinder) for finder in sys.meta_path):
        sys.meta_path.append(_PluginFileFinder())


def _absolute_plugin_paths() -> None:
    """Plugin files named relative to where the command started: children that run elsewhere (Ray trials run in
    their own folders) get the same files."""
    items = [part.strip() for part in os.environ.get(PLUGINS_ENV, "").split(",") if part.strip()]
    absolute = [os.path.abspath(item) if item.endswith(".py") else item for item in items]
    if absolute != items:
        os.environ[PLUGINS_ENV] = ",".join(absolute)


def load_plugins() -> None:
    """Import the plugins of the entry-point group and of $STRIDE_PLUGINS, each once per process."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.value not in _loaded:
            _loaded.add(entry.value)
            entry.load()
    _absolute_plugin_paths()
    install_plugin_finder()
    for item in filter(None, (part.strip() for part in os.environ.get(PLUGINS_ENV, "").split(","))):
        if item in _loaded:
            continue
        _loaded.add(item)
        try:
            if item.endswith(".py"):
                if not os.path.isfile(item):
                    raise OSError(f"no file {item}")
                importlib.import_module(plugin_module_name(item))
            else:
                importlib.import_module(item)
        except (ImportError, OSError) as err:
            raise StrideError(f"${PLUGINS_ENV}: cannot import {item!r} ({err})") from None


def discover() -> None:
    """Everything registered: stride's own packages, then the plugins."""
    for package in BUILT_IN:
        importlib.import_module(package)
    load_plugins()


def registered(registry: dict[str, T], name: str, unknown: Callable[[str], str]) -> T:
    """`registry[name]`, importing every plugin once if it is not there yet; else a StrideError whose message
    `unknown` makes from the registered names. What the task, task-config and serving lookups share."""
    if name not in registry:
        discover()
    try:
        return registry[name]
    except KeyError:
        raise StrideError(unknown(", ".join(sorted(registry)))) from None
