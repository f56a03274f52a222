"""Learning-rate multipliers as plain functions of the optimiser step (for LambdaLR)."""

from __future__ import annotations

import math
from collections.abc import Callable

from stride.config.schema import ScheduleConfig


def lr_multiplier(schedule: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr at each step: warm-up, then constant / step decay / cosine."""
    milestone_steps = [int(round(fraction * total_steps)) for fraction in schedule.milestones]
    factors = schedule.gamma if isinstance(schedule.gamma, list) else [schedule.gamma] * len(milestone_steps)

    def decay(step: int) -> float:
        if schedule.name == "step":
            return math.prod(factor for m, factor in zip(milestone_steps, factors, strict=True) if step >= m)
        if schedule.name == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
        return 1.0

    def warmup(step: int) -> float:
        if schedule.warmup == "linear" and step < schedule.warmup_steps:
            return (step + 1) / schedule.warmup_steps
        if schedule.warmup == "step":
            # the TCN seed: lr/100 until step 100, lr/10 until step 1000, then the full lr
            return schedule.warmup_factor ** -sum(step < m for m in schedule.warmup_milestones)
        return 1.0

    return lambda step: warmup(step) * decay(step)
