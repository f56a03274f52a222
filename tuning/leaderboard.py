"""The search's outcome as data: one row per trial, a CSV, a plot and a printed table."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from stride.plots import plt  # Agg backend already selected there
from stride.text_table import align_columns
from stride.tuning.spec import Dimension

FIXED_COLUMNS = ["rank", "trial_id", "run_id", "status", "epochs"]
STATUS = {"FINISHED": "completed", "KILLED": "stopped", "FAILED": "failed", "RUNNING": "interrupted"}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def rank_rows(rows: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    """Best first; trials without the metric last. Adds the 1-based `rank` column."""
    sign = -1 if mode == "max" else 1
    ordered = sorted(rows, key=lambda r: (not _finite(r.get(metric)), sign * r[metric] if _finite(r.get(metric))
                                          else 0.0))
    for position, row in enumerate(ordered, 1):
        row["rank"] = position
    return ordered


def columns(rows: list[dict[str, Any]], dimensions: list[Dimension], metric: str) -> list[str]:
    extra = sorted({k for r in rows for k in r} - set(FIXED_COLUMNS) - {metric} - {d.key for d in dimensions})
    return [*FIXED_COLUMNS, metric, *[d.key for d in dimensions], *extra]


def write_csv(rows: list[dict[str, Any]], header: list[str], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_table(rows: list[dict[str, Any]], header: list[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    header = [h for h in header if h not in ("run_id",)] + ["run_id"]
    return align_columns([header, *([cell(r.get(h)) for h in header] for r in rows)])


def plot_metric_vs_params(rows: list[dict[str, Any]], dimensions: list[Dimension], metric: str,
                          path: Path) -> Path:
    """One panel per searched key: each trial's metric against its value (log axis for log ranges)."""
    fig, axes = plt.subplots(1, len(dimensions), figsize=(4.2 * len(dimensions), 3.6), squeeze=False)
    for axis, dim in zip(axes[0], dimensions):
        points = [(r.get(dim.key), r[metric]) for r in rows if _finite(r.get(metric)) and dim.key in r]
        categorical = dim.is_discrete or any(not _finite(x) for x, _ in points)
        if categorical:
            labels = [str(v) for v in dim.args] if dim.is_discrete else sorted({str(x) for x, _ in points})
            xs: list[Any] = [labels.index(str(x)) if str(x) in labels else len(labels) for x, _ in points]
            axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        else:
            xs = [x for x, _ in points]
            if dim.log_scale:
                axis.set_xscale("log")
        colors = ["tab:green" if r.get("status") == "completed" else "tab:gray" for r in rows
                  if _finite(r.get(metric)) and dim.key in r]
        axis.scatter(xs, [y for _, y in points], c=colors, alpha=0.8)
        axis.set_xlabel(dim.key)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    fig.suptitle(f"{metric} per trial (green: trained to the end, grey: stopped early)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
