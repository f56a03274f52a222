"""A checked spec -> Ray Tune's search space, search algorithm and trial scheduler."""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, SearchAlgorithm, Searcher

from stride.config.schema import StrideConfig
from stride.tuning.pbt import pbt_scheduler
from stride.tuning.spec import Dimension, SearchSpec

TIME_ATTR = "training_iteration"  # reports so far: one per epoch, so epochs completed; what ASHA counts


def tune_domain(dim: Dimension, *, grid: bool = False) -> Any:
    if dim.enumerated(grid):
        return tune.grid_search(list(dim.args))
    if dim.kind == "choice":
        return tune.choice(list(dim.args))
    if dim.kind == "randint":
        lo, hi = dim.args
        return tune.randint(lo, hi + 1)  # stride's integer ranges include hi, as qrandint's does
    # uniform, loguniform, quniform, qloguniform, qrandint: Ray takes (lo, hi[, q]) as written
    return getattr(tune, dim.kind)(*dim.args)


def param_space(spec: SearchSpec, dimensions: list[Dimension]) -> dict[str, Any]:
    """Flat {dotted key: domain}: trials receive exactly the keys users write in configs."""
    return {d.key: tune_domain(d, grid=spec.search_alg == "grid") for d in dimensions}


def search_algorithm(spec: SearchSpec, max_concurrent: int) -> Searcher | SearchAlgorithm:
    """Random/grid or Optuna TPE, never running more than `max_concurrent` trials at once."""
    if spec.search_alg == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=spec.seed), max_concurrent=max_concurrent)
    return BasicVariantGenerator(random_state=spec.seed, max_concurrent=max_concurrent)


def scheduler(spec: SearchSpec, dimensions: list[Dimension], base: StrideConfig) -> TrialScheduler:
    s = spec.scheduler
    if s.name == "fifo":
        return FIFOScheduler()
    if s.name == "pbt":
        mutations = {d.key: (list(d.args) if d.is_discrete else tune_domain(d)) for d in dimensions
                     if d.key != "model.architecture" and not d.key.startswith("model.")}
        last_epoch = base.trainer.max_epochs if base.trainer.max_steps <= 0 else None  # steps bound it: unknown
        return pbt_scheduler(s, mutations, time_attr=TIME_ATTR, last_epoch=last_epoch)
    # max_t one past the last epoch: ASHA stops every trial that reaches max_t, and a trial that
    # trained all its epochs must still test its best checkpoint and log its model after its last report.
    max_epochs = base.trainer.max_epochs or 1
    return AsyncHyperBandScheduler(time_attr=TIME_ATTR, max_t=max_epochs + 1,
                                   grace_period=min(s.grace_period, max_epochs),
                                   reduction_factor=s.reduction_factor, brackets=s.brackets)
