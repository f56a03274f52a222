"""The folders are the architecture: imports only run downwards, and no module imports itself back.

Every `import` counts, at module level or inside a function (a lazy import hides a cycle
from the interpreter, not from this test). The checker is tested on a made-up tree first,
so a broken checker cannot pass the real one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest layer first. A package may import its own modules and any package of a lower layer,
# never a package of its own layer or a higher one. The root modules (`stride.errors`,
# `stride.text_table`, `stride.plots`) are the lowest layer.
LAYERS = [
    {"stride"},
    {"stride.metrics"},
    {"stride.architectures", "stride.datamodules"},
    {"stride.config"},
    {"stride.lightning_modules"},
    {"stride.tasks"},
    {"stride.training"},
    {"stride.serving"},
    {"stride.tracking"},
    {"stride.registry", "stride.tuning", "stride.benchmarking"},
    {"stride.pipelines"},
]


def package_folders() -> dict[str, Path]:
    """Every `stride.*` package -> its folder: the sub-packages of `stride/`, where each layer that lives at
    the top level of the repository is a link to its folder (the one place the layout is written)."""
    package = ROOT / "stride"
    folders = {"stride": package}
    for child in sorted(package.iterdir()):
        if (child / "__init__.py").is_file():
            folders[f"stride.{child.name}"] = child.resolve()
    return folders


def module_files() -> dict[str, Path]:
    found = {}
    for package, folder in package_folders().items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if package == "stride" and len(parts) > 1:
                continue  # a sub-package: listed under its own name
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imported_modules(source: str, known: set[str], module: str) -> set[str]:
    """The stride modules `source` imports anywhere in it; `from pkg import sub` counts as `pkg.sub`."""
    targets = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else ".".join(module.split(".")[:-node.level] + [node.module])
            subs = {f"{base}.{alias.name}" for alias in node.names} & known
            targets |= subs or {base}
    return {t for t in targets if t in known}


def package_of(module: str, packages: set[str]) -> str:
    parts = module.split(".")
    return next((".".join(parts[:n]) for n in range(len(parts), 1, -1) if ".".join(parts[:n]) in packages), "stride")


def layer_of(package: str, layers: list[set[str]]) -> int:
    return next(i for i, layer in enumerate(layers) if package in layer)


def upward_imports(graph: dict[str, set[str]], layers: list[set[str]]) -> list[str]:
    packages = set().union(*layers)
    problems = []
    for module, targets in sorted(graph.items()):
        own = package_of(module, packages)
        for target in sorted(targets):
            other = package_of(target, packages)
            if other != own and layer_of(other, layers) >= layer_of(own, layers):
                problems.append(f"{module} imports {target} ({other} is not below {own})")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {module: imported_modules(path.read_text(), set(files), module) - {module}
            for module, path in files.items()}


def test_the_checker_catches_upward_imports_and_cycles():
    layers = [{"stride"}, {"stride.low"}, {"stride.high"}]
    graph = {"stride.low.a": {"stride.high.b"}, "stride.high.b": {"stride.high.c"}, "stride.high.c": {"stride.high.b"},
             "stride.errors": set()}
    assert upward_imports(graph, layers) == ["stride.low.a imports stride.high.b (stride.high is not below stride.low)"]
    assert cycles(graph) == [["stride.high.b", "stride.high.c"]]
    lazy = "def f():\n    from stride.high import b\n"
    assert imported_modules(lazy, {"stride.high", "stride.high.b"}, "stride.low.a") == {"stride.high.b"}


def test_every_package_has_a_layer():
    """Each `stride.X` package, a mapped folder or a package inside `stride/`, sits in exactly one layer."""
    packages = {".".join(m.split(".")[:2]) for m, path in module_files().items()
                if path.name == "__init__.py" and m.count(".") == 1} | {"stride"}
    assert packages == set().union(*LAYERS)
    assert sum(len(layer) for layer in LAYERS) == len(packages)


def test_imports_only_run_downwards():
    assert upward_imports(import_graph(), LAYERS) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("name", ["pipelines", "tuning", "datamodules", "lightning_modules"])
def test_no_generic_top_level_package_is_importable_from_the_install(name, tmp_path, monkeypatch):
    """The layer folders exist only as `stride.*`; outside the repository `import pipelines` fails."""
    import importlib
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != ROOT])
    assert importlib.util.find_spec(name) is None
    assert importlib.util.find_spec(f"stride.{name}") is not None
