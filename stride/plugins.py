"""Finding what registers itself: stride's own tasks, serving code and architectures by scanning their packages,
anyone else's through the `stride.plugins` entry-point group or $STRIDE_PLUGINS.

A plugin is a module that registers things when imported (a task, its serving code, an architecture, a callback).
Installed packages declare it as an entry point (`[project.entry-points."stride.plugins"] mine = "my_pkg.stride"`);
a module or a `.py` file not installed is named in $STRIDE_PLUGINS (comma-separated), which stride's Ray jobs pass
on to their workers. The lookups that meet an unknown name (`task_config`, `get_task`, `get_serving`, the
architecture registry) call `discover` once before they give up, so nothing imports a registry by hand.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from importlib.metadata import entry_points

from stride.errors import StrideError

PLUGINS_ENV = "STRIDE_PLUGINS"
ENTRY_POINT_GROUP = "stride.plugins"
# stride's own packages of registered things, scanned module by module (none imports another's registry)
BUILT_IN = ("stride.architectures", "stride.tasks", "stride.serving")

_loaded: set[str] = set()


def import_submodules(package: str) -> None:
    """Import every module of `package` (each registers what it defines)."""
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def _load_file(path: str) -> None:
    name = f"stride_plugin_{abs(hash(os.path.abspath(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StrideError(f"${PLUGINS_ENV}: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def load_plugins() -> None:
    """Import the plugins of the entry-point group and of $STRIDE_PLUGINS, each once per process."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.value not in _loaded:
            _loaded.add(entry.value)
            entry.load()
    for item in filter(None, (part.strip() for part in os.environ.get(PLUGINS_ENV, "").split(","))):
        if item in _loaded:
            continue
        _loaded.add(item)
        try:
            _load_file(item) if item.endswith(".py") else importlib.import_module(item)
        except (ImportError, OSError) as err:
            raise StrideError(f"${PLUGINS_ENV}: cannot import {item!r} ({err})") from None


def discover() -> None:
    """Everything registered: stride's own packages, then the plugins."""
    for package in BUILT_IN:
        importlib.import_module(package)
    load_plugins()
