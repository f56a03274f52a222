"""Search specs: a base training config plus a search space over the same dotted keys.

Everything is checked here, before Ray starts: the spec's own fields (pydantic), every
space key against the config schema and the architecture registry, every range, and
every corner of the space (all choices, both ends of every range) as a full config.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt

from stride.architectures import get as get_architecture
from stride.architectures import names as architecture_names
from stride.bounded_loading import load_yaml
from stride.config.loading import load_raw, parse_override, set_dotted, validate
from stride.config.schema import StrideConfig
from stride.errors import StrideError

SPEC_PACKAGE = "stride.tuning.specs"
KINDS = {  # kind -> number of arguments
    "choice": None, "grid": None, "uniform": 2, "loguniform": 2, "randint": 2,
    "quniform": 3, "qloguniform": 3, "qrandint": 3,
}
MAX_CORNER_CONFIGS = 4096  # beyond this, corners are checked one key at a time
UNSEARCHABLE = ("tracking.", "name", "task")  # would split or mislabel the search's runs


@dataclass(frozen=True)
class Dimension:
    """One searched key: `kind` (choice, grid, uniform, ...) and its arguments."""

    key: str
    kind: str
    args: tuple[Any, ...]

    @property
    def is_discrete(self) -> bool:
        return self.kind in ("choice", "grid")

    def enumerated(self, grid_search: bool) -> bool:
        """Whether Tune tries every value (a grid; under `search_alg: grid` every choice too)."""
        return self.kind == "grid" or (grid_search and self.kind == "choice")

    @property
    def log_scale(self) -> bool:
        return self.kind in ("loguniform", "qloguniform")

    def corners(self) -> list[Any]:
        """Every value for choice/grid, else both (quantised) ends of the range."""
        if self.is_discrete:
            return list(self.args)
        lo, hi = self.args[0], self.args[1]
        if len(self.args) == 3:
            q = self.args[2]
            lo, hi = _quantise(lo, q), _quantise(hi, q)
            if self.kind == "qrandint":
                lo, hi = int(lo), int(hi)
        return [lo, hi]

    def describe(self) -> str:
        return f"{self.kind}{list(self.args)}"


def _quantise(value: float, q: float) -> float:
    return round(round(value / q) * q, 12)


class SchedulerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["asha", "fifo", "pbt"] = "asha"
    grace_period: PositiveInt = 1  # asha: epochs every trial gets before it can be stopped
    reduction_factor: float = Field(default=2.0, gt=1)  # asha: keep 1/reduction_factor of trials per rung
    brackets: PositiveInt = 1
    perturbation_interval: PositiveInt = 1  # pbt: epochs between exploit/explore steps
    quantile_fraction: float = Field(default=0.25, gt=0, le=0.5)
    resample_probability: float = Field(default=0.25, ge=0, le=1)
    synchronous: bool = False  # pbt: every trial waits for the others at each step (reproducible, slower)


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "search"
    base: str = Field(description="recipe name or training config file the trials start from")
    overrides: list[str] = []
    space: dict[str, dict[str, Any]] = Field(min_length=1)
    metric: str | None = None  # None: what the trials' config monitors (the task's val_<quality>)
    mode: Literal["max", "min"] | None = None  # None: the trials' monitor_mode
    num_samples: PositiveInt = 8
    max_concurrent_trials: PositiveInt | None = None
    scheduler: SchedulerSpec = SchedulerSpec()
    search_alg: Literal["random", "grid", "optuna"] = "random"
    seed: int | None = 0
    time_budget_s: PositiveFloat | None = None
    max_failures: NonNegativeInt = 1
    keep_checkpoints: PositiveInt = 2
    # deferred: trials log their weights, and `stride promote` exports the model of the run it promotes;
    # exported: every trial exports its model when it ends (docs/tuning.md)
    trial_models: Literal["deferred", "exported"] = "deferred"

    @pydantic.field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


@dataclass
class ResolvedSearch:
    """A checked spec: its dimensions, the base config mapping, and where it came from."""

    spec: SearchSpec
    source: str
    dimensions: list[Dimension]
    base_raw: dict[str, Any]
    base_source: str
    # a search over rows of different configs (a study's table, tuning.study): the space's `row` key names
    # the row whose config a trial starts from instead of the base; the base is the first row's
    row_raws: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.config_for({}, "base").task

    def config_for(self, params: dict[str, Any], label: str = "trial") -> StrideConfig:
        raw, params = raw_for_row(self.base_raw, self.row_raws, params)
        return config_for_params(raw, params, f"{self.base_source} with {label} {params}")

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.model_dump(mode="json"), "source": self.source, "base_raw": self.base_raw,
                "base_source": self.base_source, "row_raws": self.row_raws}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedSearch:
        spec = SearchSpec.model_validate(data["spec"])
        dims = [parse_dimension(key, value, data["source"]) for key, value in spec.space.items()]
        return cls(spec, data["source"], dims, data["base_raw"], data["base_source"], data.get("row_raws", {}))


ROW_KEY = "row"  # the space key of a search over rows (tuning.study)


def raw_for_row(base_raw: dict[str, Any], row_raws: dict[str, dict[str, Any]],
                params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config mapping a trial starts from (its row's, where the search has rows) and its other values."""
    if ROW_KEY not in params or not row_raws:
        return base_raw, params
    rest = {k: v for k, v in params.items() if k != ROW_KEY}
    return row_raws[params[ROW_KEY]], rest


def packaged_names(package: str) -> list[str]:
    """The built-in YAML files of `package`, by name."""
    return sorted(p.name[:-5] for p in resources.files(package).iterdir() if p.name.endswith(".yaml"))


def read_named_yaml(name_or_path: str, package: str, kind: str, fields: str) -> tuple[dict[str, Any], str, Path | None]:
    """A built-in `kind` of `package` by name or a YAML file: (its mapping with `name` set, a source label, the
    folder relative paths in it start from). `fields` says what the mapping holds, for the error."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise StrideError(f"{kind} {path} does not exist")
        text, source, folder = path.read_text(), str(path), path.absolute().parent
    elif name_or_path in packaged_names(package):
        text = resources.files(package).joinpath(f"{name_or_path}.yaml").read_text()
        source, folder = f"{kind} {name_or_path}", None
    else:
        raise StrideError(f"unknown {kind} {name_or_path!r}; built-in: {', '.join(packaged_names(package))} "
                          "(or give a path to a .yaml file)")
    data = load_yaml(text, source) or {}
    if not isinstance(data, dict):
        raise StrideError(f"{source}: expected a mapping ({fields}), got {type(data).__name__}")
    data.setdefault("name", path.stem if folder is not None else name_or_path)
    return data, source, folder


def spec_names() -> list[str]:
    return packaged_names(SPEC_PACKAGE)


def read_spec(name_or_path: str) -> tuple[dict[str, Any], str, Path | None]:
    """Built-in spec by name or a YAML file; returns (mapping, source label, folder for relative bases)."""
    return read_named_yaml(name_or_path, SPEC_PACKAGE, "search spec", "base, space, ...")


def load_search(name_or_path: str, overrides: Sequence[str] = (), spec_overrides: dict[str, Any] | None = None
                ) -> ResolvedSearch:
    """Read, validate and resolve a spec; `overrides` are extra `--set` items for the base config."""
    data, source, folder = read_spec(name_or_path)
    data.update(spec_overrides or {})
    return resolve_spec(data, source, folder, overrides)


def resolve_spec(data: dict[str, Any], source: str, folder: Path | None, overrides: Sequence[str] = (),
                 row_raws: dict[str, dict[str, Any]] | None = None) -> ResolvedSearch:
    """Validate and resolve a spec mapping (`row_raws`: the configs of a search over rows, tuning.study)."""
    row_raws = row_raws or {}
    try:
        spec = SearchSpec.model_validate(data)
    except pydantic.ValidationError as err:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" + (
            f" (allowed: {', '.join(SearchSpec.model_fields)})" if e["type"] == "extra_forbidden" else "")
            for e in err.errors()]
        raise StrideError(f"{source}: invalid search spec: " + "; ".join(problems)) from None
    if row_raws:  # a search over rows: the first row's config is the base
        first = next(iter(row_raws))
        base_raw, base_source = copy.deepcopy(row_raws[first]), f"{source}, row {first}"
    else:
        base = spec.base
        if folder is not None and not Path(base).is_absolute() and (folder / base).is_file():
            base = str(folder / base)
        base_raw, base_source = load_raw(base)
        base_raw = copy.deepcopy(base_raw)
    all_overrides = [*spec.overrides, *overrides]
    row_raws = {name: copy.deepcopy(raw) for name, raw in row_raws.items()}
    for item in all_overrides:
        for raw in (base_raw, *row_raws.values()):
            set_dotted(raw, *parse_override(item))
    if all_overrides:
        base_source += " with " + " ".join(all_overrides)
    for raw in (base_raw, *row_raws.values()):
        _absolute_data_path(raw)
    base_config = validate(base_raw, base_source)  # the base alone must be a valid config
    if spec.metric is None:
        spec.metric, spec.mode = base_config.trainer.monitor, spec.mode or base_config.trainer.monitor_mode
    assert spec.metric is not None, "trainer.monitor is filled in by config validation"
    spec.mode = spec.mode or ("min" if spec.metric.endswith("loss") else "max")
    dimensions = [parse_dimension(key, value, source) for key, value in spec.space.items()]
    check_keys([d for d in dimensions if not (row_raws and d.key == ROW_KEY)], base_raw, source)
    check_algorithm(spec, dimensions, source)
    check_corners(dimensions, base_raw, f"{source} (base {base_source})", row_raws)
    return ResolvedSearch(spec, source, dimensions, base_raw, base_source, row_raws)


def _absolute_data_path(raw: dict[str, Any]) -> None:
    """Trials run in their own working folders, so a relative dataset path is fixed here."""
    path = raw.get("data", {}).get("path")
    if isinstance(path, str) and "://" not in path and not Path(path).is_absolute():
        raw["data"]["path"] = str(Path(path).absolute())


def parse_dimension(key: str, value: Any, source: str) -> Dimension:
    where = f"{source}: space.{key}"
    if not isinstance(value, dict) or len(value) != 1:
        raise StrideError(f"{where}: expected one of {{{', '.join(KINDS)}}}: [...], got {value!r}")
    kind, args = next(iter(value.items()))
    if kind not in KINDS:
        raise StrideError(f"{where}: unknown kind {kind!r} (allowed: {', '.join(KINDS)})")
    if not isinstance(args, list) or not args:
        raise StrideError(f"{where}: {kind} needs a non-empty list, got {args!r}")
    if KINDS[kind] is None:
        if len(args) != len({yaml.safe_dump(a) for a in args}):
            raise StrideError(f"{where}: {kind} lists a value twice: {args}")
        return Dimension(key, kind, tuple(args))
    if len(args) != KINDS[kind]:
        names = "[lo, hi]" if KINDS[kind] == 2 else "[lo, hi, q]"
        raise StrideError(f"{where}: {kind} needs {names}, got {args!r}")
    integer = kind in ("randint", "qrandint")
    for arg in args:
        if isinstance(arg, bool) or not isinstance(arg, (int, float)) or not math.isfinite(arg):
            raise StrideError(f"{where}: {kind} bounds must be numbers, got {args!r}")
        if integer and not isinstance(arg, int):
            raise StrideError(f"{where}: {kind} bounds must be integers, got {args!r}")
    lo, hi = args[0], args[1]
    if not lo < hi:
        raise StrideError(f"{where}: empty or inverted range {kind}[{lo}, {hi}]: lo must be below hi")
    if kind in ("loguniform", "qloguniform") and lo <= 0:
        raise StrideError(f"{where}: {kind} needs lo > 0 (a log scale), got lo={lo}")
    if len(args) == 3 and not 0 < args[2] <= hi - lo:
        raise StrideError(f"{where}: quantum q={args[2]} must be positive and at most hi - lo")
    return Dimension(key, kind, tuple(args))


def valid_keys(architectures: list[str], config_class: type[StrideConfig] = StrideConfig) -> list[str]:
    """Dotted keys a space may name: the task config's leaves (its own data and loss options included) plus the
    architectures' hyper-parameters."""
    keys = [key for key in _schema_leaves(config_class) if not key.startswith("model.")]
    keys.append("model.architecture")
    for arch in architectures:
        keys += [f"model.{p}" for p in get_architecture(arch).param_names]
    return sorted(k for k in dict.fromkeys(keys) if not k.startswith(UNSEARCHABLE))


def _schema_leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    leaves = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation.model_fields:
            leaves += _schema_leaves(annotation, f"{prefix}{name}.")
        else:
            leaves.append(f"{prefix}{name}")
    return leaves


def _architectures(dimensions: list[Dimension], base_raw: dict[str, Any]) -> list[str]:
    for dim in dimensions:
        if dim.key == "model.architecture":
            unknown = [a for a in dim.args if a not in architecture_names()]
            if unknown:
                raise StrideError(f"space.model.architecture: unknown {unknown} (registered: "
                                  f"{', '.join(architecture_names())})")
            return list(dim.args)
    return [base_raw.get("model", {}).get("architecture", "")]


def check_keys(dimensions: list[Dimension], base_raw: dict[str, Any], source: str) -> None:
    from stride.config.task_configs import task_config

    task = base_raw.get("task", "classification")
    config_class = task_config(task).config_class if isinstance(task, str) else StrideConfig
    allowed = valid_keys([a for a in _architectures(dimensions, base_raw) if a in architecture_names()], config_class)
    unknown = [d.key for d in dimensions if d.key not in allowed]
    if unknown:
        raise StrideError(f"{source}: space key(s) {', '.join(unknown)} are not config keys of this search; "
                          f"valid keys: {', '.join(allowed)}")


def trial_count(spec: SearchSpec, dimensions: list[Dimension]) -> int:
    """How many trials the search starts: `num_samples` times every grid (a grid search: every choice too)."""
    count = spec.num_samples
    for dim in dimensions:
        if dim.enumerated(spec.search_alg == "grid"):
            count *= len(dim.args)
    return count


def check_algorithm(spec: SearchSpec, dimensions: list[Dimension], source: str) -> None:
    grid = [d.key for d in dimensions if d.kind == "grid"]
    if spec.search_alg == "grid":
        continuous = [d.key for d in dimensions if not d.is_discrete]
        if continuous:
            raise StrideError(f"{source}: search_alg grid needs choice/grid values, but {', '.join(continuous)} "
                              "are ranges; use search_alg random or optuna")
    elif spec.search_alg == "optuna" and grid:
        raise StrideError(f"{source}: search_alg optuna cannot enumerate grid keys {', '.join(grid)}; use choice")
    if spec.scheduler.name == "pbt":
        if spec.search_alg != "random":
            raise StrideError(f"{source}: the pbt scheduler mutates configs itself; use search_alg random with it")
        if all(d.key.startswith("model.") for d in dimensions):
            raise StrideError(f"{source}: pbt continues trials from each other's checkpoints, so it can only "
                              "mutate keys outside model.* (e.g. optim.lr); use asha to search architectures")


def config_for_params(base_raw: dict[str, Any], params: dict[str, Any], source: str) -> StrideConfig:
    """The trial's config: the base with the sampled values set. A searched architecture is a condition:
    the base's and the space's hyper-parameters that the trial's architecture does not have are left out
    (a TCN-vs-GRU search samples `model.num_blocks` for both, and only the TCN takes it)."""
    raw = copy.deepcopy(base_raw)
    arch = params.get("model.architecture")
    if arch is not None and arch in architecture_names() and arch != raw.get("model", {}).get("architecture"):
        keep = set(get_architecture(arch).param_names)
        raw["model"] = {k: v for k, v in raw.get("model", {}).items() if k in keep}
    for key, value in applicable_params(params).items():
        set_dotted(raw, key, value)
    return validate(raw, source)


def applicable_params(params: dict[str, Any]) -> dict[str, Any]:
    """The sampled values a trial uses: without the `model.*` hyper-parameters its architecture lacks."""
    arch = params.get("model.architecture")
    if arch is None or arch not in architecture_names():
        return dict(params)
    keep = set(get_architecture(arch).param_names)
    return {k: v for k, v in params.items()
            if not k.startswith("model.") or k == "model.architecture" or k.split(".")[1] in keep}


def check_corners(dimensions: list[Dimension], base_raw: dict[str, Any], source: str,
                  row_raws: dict[str, dict[str, Any]] | None = None) -> None:
    """Validate every combination of corner values (or each key's corners alone when there are too many)."""
    corner_lists = [d.corners() for d in dimensions]
    keys = [d.key for d in dimensions]
    if math.prod(len(c) for c in corner_lists) <= MAX_CORNER_CONFIGS:
        combos = (dict(zip(keys, values)) for values in itertools.product(*corner_lists))
    else:
        first = {k: c[0] for k, c in zip(keys, corner_lists)}
        combos = ({**first, k: v} for k, c in zip(keys, corner_lists) for v in c)
    for params in combos:
        try:
            config_for_params(*raw_for_row(base_raw, row_raws or {}, params), "")
        except StrideError as err:
            problem = str(err).split("invalid config: ", 1)[-1]
            raise StrideError(f"{source}: the space reaches an invalid config at {params}: {problem}") from None
