"""Studies: a table of the research as one command. Each row is a recipe with overrides and the figure the
source publishes for it; the rows (times `--repeats` seeds) run as one Ray Tune grid in an MLflow parent run,
so resume, fault tolerance and the cluster are a search's, and the report sets measured beside published.

A study is a YAML file (built-in ones in `stride.tuning.studies`, docs/studies.md): title, source,
the metric compared and how the source writes it (`published_as`), the axes that group the rows, the
rows, and scales: `full` (the published setting) and `smoke` (built-in data, minutes on a CPU).
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from stride.config.loading import load_raw, parse_override, set_dotted, validate
from stride.errors import StrideError
from stride.names import plain_name
from stride.tuning.spec import (
    ROW_KEY,
    ResolvedSearch,
    _absolute_data_path,
    packaged_names,
    read_named_yaml,
    resolve_spec,
)

STUDY_PACKAGE = "stride.tuning.studies"
SEED_KEY = "trainer.seed"  # repeats differ only in their seed


class StudyRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    recipe: str = Field(description="built-in recipe name or config file the row trains")
    overrides: list[str] = []
    axes: dict[str, str | int | float] = {}  # the row's value on each of the study's axes
    published: float | None = None  # the source's figure, in `published_as` units; None: not reported
    deviations: str = ""  # how stride's run differs from the published setting (docs/models.md)

    @pydantic.field_validator("name")
    @classmethod
    def _plain(cls, value: str) -> str:
        try:
            return plain_name(value, "row name")
        except StrideError as err:  # pydantic reports ValueErrors with the field's place
            raise ValueError(str(err)) from None


class StudyScale(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overrides: list[str] = []  # for every row at this scale
    recipes: dict[str, str] = {}  # row -> the recipe it trains at this scale instead (e.g. on built-in data)
    row_overrides: dict[str, list[str]] = {}
    # a built-in dataset (stride data prepare NAME) made once under the storage folder and used as data.path
    prepare: Literal["digits", "patches", "faces", "shapes-captions"] | None = None


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "study"
    title: str
    source: str  # section and table of the research, e.g. "A, Table 3"
    metric: str = Field(description="the run metric the table reports, e.g. test_acc")
    published_as: Literal["value", "error_percent", "accuracy_percent"] = "value"
    axes: list[str] = []
    rows: list[StudyRow] = Field(min_length=1)
    scales: dict[str, StudyScale] = {"full": StudyScale()}
    max_concurrent_trials: PositiveInt | None = None

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        names = [row.name for row in self.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"rows: a row name is used twice: {names}")
        for row in self.rows:
            missing = [axis for axis in self.axes if axis not in row.axes]
            if missing:
                raise ValueError(f"rows.{row.name}: no value for axes {missing}")
        for scale_name, scale in self.scales.items():
            unknown = sorted((set(scale.recipes) | set(scale.row_overrides)) - set(names))
            if unknown:
                raise ValueError(f"scales.{scale_name}: unknown rows {unknown} (rows: {', '.join(names)})")
        return self

    def in_published_units(self, measured: float) -> float:
        """A measured metric (an accuracy in [0, 1], or any value) as the source writes its figures."""
        if self.published_as == "error_percent":
            return 100.0 * (1.0 - measured)
        if self.published_as == "accuracy_percent":
            return 100.0 * measured
        return measured


def study_names() -> list[str]:
    return packaged_names(STUDY_PACKAGE)


def load_study(name_or_path: str) -> tuple[StudySpec, str, Path | None]:
    """A built-in study by name or a YAML file: (the checked study, its source label, its folder)."""
    data, source, folder = read_named_yaml(name_or_path, STUDY_PACKAGE, "study", "title, source, metric, rows, ...")
    try:
        return StudySpec.model_validate(data), source, folder
    except pydantic.ValidationError as err:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise StrideError(f"{source}: invalid study: " + "; ".join(problems)) from None


@dataclass(frozen=True)
class StudyPlan:
    """What `stride study run` starts: the study, its scale, and the search over its rows."""

    study: StudySpec
    scale: str
    repeats: int
    search: ResolvedSearch


def plan_study(study: StudySpec, source: str, folder: Path | None, *, scale: str = "full", repeats: int = 1,
               overrides: Sequence[str] = (), data_path: str | None = None) -> StudyPlan:
    """Every row's config, checked before anything runs, and the grid over rows (and seeds) that trains them."""
    if scale not in study.scales:
        raise StrideError(f"{source}: no scale {scale!r} (scales: {', '.join(study.scales)})")
    if repeats < 1:
        raise StrideError(f"--repeats must be at least 1, got {repeats}")
    chosen = study.scales[scale]
    row_raws: dict[str, dict[str, Any]] = {}
    for row in study.rows:
        recipe = chosen.recipes.get(row.name, row.recipe)
        if folder is not None and not Path(recipe).is_absolute() and (folder / recipe).is_file():
            recipe = str(folder / recipe)
        raw, _ = load_raw(recipe)
        raw = copy.deepcopy(raw)
        set_dotted(raw, "tracking.experiment", f"study-{study.name}")
        set_dotted(raw, "name", f"{study.name}-{row.name}")
        if data_path:  # a prepared built-in dataset; the user's own data.path (in `overrides`) wins
            set_dotted(raw, "data.path", data_path)
        for item in [*row.overrides, *chosen.overrides, *chosen.row_overrides.get(row.name, []), *overrides]:
            set_dotted(raw, *parse_override(item))
        _absolute_data_path(raw)
        validate(raw, f"{source}, row {row.name} ({recipe})")  # every row is a valid config before Ray starts
        row_raws[row.name] = raw
    tasks = {validate(raw, "").task for raw in row_raws.values()}
    if len(tasks) > 1:
        raise StrideError(f"{source}: the rows train different tasks ({', '.join(sorted(tasks))}); a study compares "
                          "one metric of one task")
    space: dict[str, dict[str, Any]] = {ROW_KEY: {"grid": [row.name for row in study.rows]}}
    if repeats > 1:
        space[SEED_KEY] = {"grid": list(range(repeats))}
    first = study.rows[0]
    spec = {"name": study.name, "base": first.recipe, "space": space, "num_samples": 1, "scheduler": "fifo",
            "search_alg": "random", "max_concurrent_trials": study.max_concurrent_trials}
    search = resolve_spec(spec, f"{source} ({scale})", None, row_raws=row_raws)
    return StudyPlan(study, scale, repeats, search)


# -- the report ---------------------------------------------------------------------------------------------
@dataclass
class ReportRow:
    name: str
    axes: dict[str, Any]
    published: float | None
    measured: list[float]  # one per finished repeat, in published units
    parameters: int | None
    epochs: int
    wall_time_s: float
    deviations: str

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.measured) if self.measured else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.measured) if len(self.measured) > 1 else (0.0 if self.measured else None)

    @property
    def difference(self) -> float | None:
        return None if self.mean is None or self.published is None else self.mean - self.published


@dataclass
class StudyReport:
    study: StudySpec
    scale: str
    hardware: str
    rows: list[ReportRow]

    def markdown(self) -> str:
        study = self.study
        unit = {"value": study.metric, "error_percent": f"test error % (from {study.metric})",
                "accuracy_percent": f"accuracy % (from {study.metric})"}[study.published_as]
        lines = [f"# {study.title}", "", f"Source: {study.source}. Scale: {self.scale}. Figure: {unit}. "
                 f"Hardware: {self.hardware}.", "",
                 "| row | " + "".join(f"{axis} | " for axis in study.axes)
                 + "published | measured (mean ± std, n) | difference | parameters | epochs | wall time | deviations |",
                 "|---|" + "---|" * len(study.axes) + "---|---|---|---|---|---|---|"]
        for row in self.rows:
            measured = (f"{row.mean:.4g} ± {row.std:.2g} (n={len(row.measured)})" if row.mean is not None
                        else "no finished run")
            lines.append(
                f"| {row.name} | " + "".join(f"{row.axes.get(axis, '')} | " for axis in study.axes)
                + f"{_shown(row.published, 'not published')} | {measured} | {_shown(row.difference, '')} | "
                f"{f'{row.parameters:,}' if row.parameters is not None else ''} | {row.epochs} | "
                f"{row.wall_time_s:.0f} s | {row.deviations or ('smoke scale' if self.scale == 'smoke' else '')} |")
        if self.scale != "full":
            lines += ["", f"The {self.scale} scale trains on other data and for fewer epochs than the source: its "
                      "figures prove the machinery, not the published numbers."]
        return "\n".join(lines) + "\n"


def _shown(value: float | None, empty: str) -> str:
    return empty if value is None or not math.isfinite(value) else f"{round(value, 9) + 0.0:.4g}"  # no -0, no 1e-16


def report_rows(study: StudySpec, trials: list[dict[str, Any]]) -> list[ReportRow]:
    """Group a search's trial rows (with `metric`, `parameters`, `epochs`, `seconds`) by study row."""
    rows = []
    for row in study.rows:
        mine = [t for t in trials if t.get(ROW_KEY) == row.name]
        finished = [t for t in mine if t.get("metric") is not None and math.isfinite(t["metric"])]
        rows.append(ReportRow(
            row.name, dict(row.axes), row.published, [study.in_published_units(t["metric"]) for t in finished],
            next((t["parameters"] for t in mine if t.get("parameters") is not None), None),
            max((t.get("epochs", 0) for t in mine), default=0),
            statistics.fmean([t["seconds"] for t in mine if t.get("seconds")] or [0.0]), row.deviations))
    return rows
