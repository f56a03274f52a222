"""Turn recipe names, YAML files and `--set key=value` overrides into a validated config.

Validation happens here, once, at the edge: every error names the source (file or
override) and the dotted key, and lists the allowed values where there is a finite set.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import pydantic
import yaml

from stride.architectures import get as get_architecture
from stride.architectures import validate_params
from stride.bounded_loading import load_yaml
from stride.config.components import check_components
from stride.config.schema import StrideConfig
from stride.config.task_configs import TaskConfig, task_config, tasks_with_option
from stride.errors import StrideError

RECIPE_PACKAGE = "stride.config.recipes"
BASES_FOLDER = "bases"  # recipes that other recipes extend (`base: NAME`), not listed as trainable on their own
BASE_KEY = "base"
MAX_BASE_DEPTH = 8


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(RECIPE_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def base_names() -> list[str]:
    folder = resources.files(RECIPE_PACKAGE).joinpath(BASES_FOLDER)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    data = load_yaml(text, source)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StrideError(f"{source}: expected a mapping of config sections, got {type(data).__name__}")
    return data


def _read_one(recipe_or_path: str, relative_to: Path | None = None) -> tuple[dict[str, Any], str, Path | None]:
    """One recipe file, its `base:` not followed: (mapping, source label, its folder for relative bases)."""
    path = Path(recipe_or_path)
    if relative_to is not None and not path.is_absolute() and path.suffix in (".yaml", ".yml"):
        path = relative_to / path
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise StrideError(f"config file {path} does not exist")
        return _read_yaml(path.read_text(), str(path)), str(path), path.parent
    package = resources.files(RECIPE_PACKAGE)
    if recipe_or_path in recipe_names():
        text, source = package.joinpath(f"{recipe_or_path}.yaml").read_text(), f"recipe {recipe_or_path}"
    elif recipe_or_path in base_names():
        text = package.joinpath(BASES_FOLDER, f"{recipe_or_path}.yaml").read_text()
        source = f"base recipe {recipe_or_path}"
    else:
        raise StrideError(f"unknown recipe {recipe_or_path!r}; built-in recipes: {', '.join(recipe_names())}; "
                          f"bases: {', '.join(base_names())} (or give a path to a .yaml file)")
    return _read_yaml(text, source), source, None


def merged(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`child` over `base`, section by section: mappings merge key by key, anything else (lists too) is replaced."""
    result = dict(base)
    for key, value in child.items():
        result[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
            else value
    return result


def load_raw(recipe_or_path: str) -> tuple[dict[str, Any], str]:
    """Read a built-in recipe by name or a YAML file by path, with the recipes it extends (`base: NAME` or a
    path relative to the file) merged under it; return (mapping, source label)."""
    raw, source, folder = _read_one(recipe_or_path)
    chain = [source]
    while BASE_KEY in raw:
        base = raw.pop(BASE_KEY)
        if not isinstance(base, str) or not base:
            raise StrideError(f"{chain[-1]}: {BASE_KEY}: expected the name of a recipe or a .yaml path, got {base!r}")
        if len(chain) > MAX_BASE_DEPTH:
            raise StrideError(f"{source}: more than {MAX_BASE_DEPTH} levels of {BASE_KEY}: ({' -> '.join(chain)})")
        parent, parent_source, parent_folder = _read_one(base, folder)
        if parent_source in chain:
            raise StrideError(f"{source}: {BASE_KEY} recipes extend each other in a circle: "
                              f"{' -> '.join([*chain, parent_source])}")
        chain.append(parent_source)
        raw = merged(parent, raw)
        folder = parent_folder or folder
    return raw, source if len(chain) == 1 else f"{source} (extending {', '.join(chain[1:])})"


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise StrideError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=0.01")
    key, value = item.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value


def set_dotted(mapping: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = mapping
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise StrideError(f"override {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 0.1}} -> {'optim.lr': 0.1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


# The options every task's data took before each task owned its own (stride <= 0.1 kept them in one section), at
# their defaults: configs stored by then (checkpoints, logged runs) still carry them, and only those are dropped.
LEGACY_DATA_DEFAULTS: dict[str, Any] = {
    "sequence_view": "sequential", "permutation_seed": 0, "image_size": None, "train_sizes": [], "max_words": 50,
    "augment": {"random_shift_px": 0, "horizontal_flip": False, "random_crop": False, "color_jitter": 0.0}}


def _without_legacy_options(raw: dict[str, Any], options: type[pydantic.BaseModel]) -> dict[str, Any]:
    """A stored config's `data` without the other tasks' options it carried at their defaults."""
    def prune(values: dict[str, Any], model: Any, legacy: dict[str, Any]) -> dict[str, Any]:
        fields = getattr(model, "model_fields", {})
        kept = {}
        for key, value in values.items():
            if key not in fields and key in legacy and value == legacy[key]:
                continue
            if isinstance(value, dict) and isinstance(legacy.get(key), dict) and key in fields:
                value = prune(value, fields[key].annotation, legacy[key])
            kept[key] = value
        return kept

    data = raw.get("data")
    return {**raw, "data": prune(data, options, LEGACY_DATA_DEFAULTS)} if isinstance(data, dict) else raw


def _problem(error: Any, entry: TaskConfig) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        if error["loc"][0] == "data" and (owners := tasks_with_option(".".join(map(str, error["loc"][1:])))):
            return (f"{key}: an option of task{'s' if len(owners) > 1 else ''} {', '.join(owners)}, not of task "
                    f"{entry.name!r}")
        return f"{key}: unknown key (allowed: {', '.join(_section_fields(entry.config_class, error['loc'][:-1]))})"
    if error["type"] == "missing":
        return f"{key}: required but missing"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def validate(raw: dict[str, Any], source: str, *, stored: bool = False) -> StrideConfig:
    """The config of `raw`'s task, checked; `stored`: a config written by an earlier stride (a checkpoint, a
    logged run), whose data section may still hold other tasks' options at their defaults."""
    try:
        entry = task_config(str(raw.get("task", "classification")))
    except StrideError as err:
        raise StrideError(f"{source}: invalid config: task: {err}") from None
    if stored:
        raw = _without_legacy_options(raw, entry.data_options)
    try:
        config = entry.config_class.model_validate(raw)
    except pydantic.ValidationError as err:
        problems = [_problem(e, entry) for e in err.errors()]
        raise StrideError(f"{source}: invalid config: " + "; ".join(problems)) from None
    trainer = config.trainer
    if trainer.monitor is None:
        trainer.monitor = entry.monitor
        trainer.monitor_mode = trainer.monitor_mode or entry.monitor_mode
    elif trainer.monitor_mode is None:
        trainer.monitor_mode = entry.monitor_mode if trainer.monitor == entry.monitor else "min" \
            if trainer.monitor.endswith("loss") else "max"
    try:
        for kind in ("callbacks", "loggers"):
            check_components(kind, getattr(config, kind), trainer.monitor, trainer.monitor_mode)
        arch = get_architecture(config.model.architecture)
        if arch.task != config.task:
            raise StrideError(f"architecture {arch.name!r} is for task {arch.task!r}, but task is {config.task!r}")
        validate_params(config.model.architecture, config.model.params)
    except StrideError as err:
        raise StrideError(f"{source}: invalid config: {err}") from None
    return config


def _section_fields(model: Any, loc: tuple[Any, ...]) -> list[str]:
    for part in loc:
        model = model.model_fields[part].annotation
    return list(model.model_fields)


def load_config(recipe_or_path: str, overrides: Iterable[str] = ()) -> StrideConfig:
    raw, source = load_raw(recipe_or_path)
    raw = copy.deepcopy(raw)
    overrides = list(overrides)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    if overrides:
        source += " with --set " + " ".join(overrides)
    return validate(raw, source)


def config_to_dict(config: StrideConfig) -> dict[str, Any]:
    """Plain, YAML-safe mapping of a config (model hyper-parameters filled with their defaults)."""
    data = config.model_dump(mode="json")
    data["model"] = {"architecture": config.model.architecture,
                     **validate_params(config.model.architecture, config.model.params)}
    return data


def config_to_yaml(config: StrideConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
