"""One benchmark of one config: loader, stride and bare throughput, and where they were measured."""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import torch

from stride.benchmarking.loader import loader_throughput
from stride.benchmarking.timing import Throughput
from stride.benchmarking.training import bare_throughput, build_network, stride_throughput
from stride.config.schema import StrideConfig
from stride.datamodules.workers import loader_workers
from stride.hardware import device_description
from stride.training import open_datamodule
from stride.training.speed import resolve_channels_last, resolve_precision, uses_cuda

PACKAGES = ("stride", "torch", "pytorch-lightning", "torchmetrics", "mlflow", "numpy")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        found["cuda"] = str(torch.version.cuda)
        found["cudnn"] = str(torch.backends.cudnn.version())
    return found


def trained_workers(config: StrideConfig) -> int:
    """The loader processes training really uses: none for a decoded cache."""
    return loader_workers(config.data.num_workers) if config.data.cache == "none" else 0


def default_worker_counts(config: StrideConfig) -> list[int]:
    return sorted({n for n in (0, 1, 2, 4, 8) if n <= (os.cpu_count() or 1)}
                  | {loader_workers(config.data.num_workers)})


@dataclass
class BenchReport:
    recipe: str
    dataset: str
    device: str
    accelerator: str
    precision: str
    channels_last: bool
    compile: bool
    batch_size: int
    steps: int
    warmup_steps: int
    repeats: int
    recipe_workers: int
    cache: str = "none"  # data.cache of the measured path
    loader: list[dict[str, Any]] = field(default_factory=list)  # one row per worker count
    stride: dict[str, float] = field(default_factory=dict)
    bare: dict[str, float] = field(default_factory=dict)
    ratio: float = 0.0  # stride samples/s over bare samples/s
    # the loader's rate at the workers the recipe trains with, over the rate training consumes samples:
    # below 1 the loader is the bottleneck
    loader_headroom: float | None = None  # None: the trained worker count was not among those measured
    # on a CPU: the same ratio from this process's CPU time, robust to other jobs on the machine
    ratio_by_cpu_time: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    command: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [f"stride bench {self.recipe}: batch {self.batch_size}, {self.steps} timed steps after "
                 f"{self.warmup_steps} warm-up (best of {self.repeats}), precision {self.precision}, "
                 f"channels_last {self.channels_last}, compile {self.compile}, data.cache {self.cache}",
                 f"device: {self.accelerator} {self.device}",
                 f"dataset: {self.dataset}"]
        for row in self.loader:
            mark = " (recipe)" if row["workers"] == self.recipe_workers else ""
            lines.append(f"  loader, {row['workers']} workers{mark}: {row['samples_per_s']:>12,.0f} samples/s")
        lines.append(f"  stride training:          {self.stride['samples_per_s']:>12,.0f} samples/s")
        lines.append(f"  bare PyTorch loop:        {self.bare['samples_per_s']:>12,.0f} samples/s")
        lines.append(f"  ratio stride/bare:        {self.ratio:>12.3f}")
        lines.append(f"  loader headroom:          {self.loader_headroom:>12.1f} x" if self.loader_headroom is not None
                     else f"  loader headroom:          not measured (workers {self.recipe_workers} not in --workers)")
        if self.ratio_by_cpu_time is not None:
            lines.append(f"  ... by process CPU time:  {self.ratio_by_cpu_time:>12.3f}")
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()))
        return "\n".join(lines)


def significant(value: float, digits: int = 4) -> float:
    """Rounded to `digits` significant digits: a ratio of 0.0237 keeps as much precision as 0.937."""
    return float(f"{value:.{digits}g}")


def best(runs: list[Throughput]) -> dict[str, Any]:
    """The fastest of repeated runs (the least disturbed by anything else on the machine), and all of them."""
    fastest = max(runs, key=lambda run: run.samples_per_s)
    return {**fastest.as_dict(), "runs_samples_per_s": [round(run.samples_per_s, 3) for run in runs]}


def cpu_seconds(run: Throughput) -> float:
    assert run.cpu_seconds is not None, "both training loops measure CPU time"
    return run.cpu_seconds


def run_benchmark(config: StrideConfig, *, steps: int = 100, warmup_steps: int = 10, repeats: int = 1,
                  workers: Sequence[int] | None = None, loader_batches: int | None = None,
                  tracking_uri: str | None = None, command: str = "", record: bool = True) -> BenchReport:
    """Measure `config` as given (set data.batch_size etc. beforehand); print nothing.

    Bare and stride runs alternate `repeats` times so that a disturbance hits both alike.
    Stride runs are logged to `tracking_uri`, by default to a throw-away local store; `record=False`
    times the stride path without its MLflow recorder.
    """
    device = torch.device("cuda") if uses_cuda(config.trainer) else torch.device("cpu")
    datamodule = open_datamodule(config)
    report = BenchReport(
        recipe=config.name, dataset=str(datamodule.root), device=device_description(device),
        accelerator=device.type, precision=resolve_precision(config.trainer),
        channels_last=resolve_channels_last(config.trainer, build_network(config)),
        compile=config.trainer.compile, batch_size=config.data.batch_size, steps=steps, warmup_steps=warmup_steps,
        repeats=repeats, recipe_workers=trained_workers(config), cache=config.data.cache, versions=versions(),
        command=command)
    if config.data.cache != "none":
        workers = [0]  # a decoded cache is served by the training process itself
    for count in default_worker_counts(config) if workers is None else workers:
        measured = loader_throughput(config, count, batches=loader_batches or steps, warmup_batches=warmup_steps,
                                     device=device)
        report.loader.append({"workers": count, **measured.as_dict()})
    bare_runs, stride_runs = [], []
    with tempfile.TemporaryDirectory(prefix="stride-bench-") as workdir:
        uri = (tracking_uri or f"sqlite:///{workdir}/mlruns.db") if record else None
        for _ in range(repeats):
            bare_runs.append(bare_throughput(config, steps=steps, warmup_steps=warmup_steps, device=device))
            stride_runs.append(stride_throughput(config, steps=steps, warmup_steps=warmup_steps, tracking_uri=uri,
                                                 workdir=workdir))
    report.bare, report.stride = best(bare_runs), best(stride_runs)
    report.ratio = significant(report.stride["samples_per_s"] / report.bare["samples_per_s"])
    feeding = next((row for row in report.loader if row["workers"] == report.recipe_workers), None)
    if feeding is not None:
        report.loader_headroom = significant(feeding["samples_per_s"] / report.stride["samples_per_s"])
    if device.type == "cpu":  # the least CPU time of each, as for wall time
        report.ratio_by_cpu_time = significant(min(map(cpu_seconds, bare_runs)) / min(map(cpu_seconds, stride_runs)))
    return report
