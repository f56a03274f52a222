"""How many loader processes `data.num_workers: auto` means on the machine at hand."""

from __future__ import annotations

import os

MAX_AUTO_WORKERS = 8  # beyond this, decoding rarely limits a single training process


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or a job's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without affinity
        return os.cpu_count() or 1


def loader_workers(requested: int | str) -> int:
    """`auto`: one CPU fewer than the process has (the training loop keeps one), at most MAX_AUTO_WORKERS; a number
    is taken as given. PyTorch warns on every run when a loader starts more workers than there are CPUs."""
    if requested == "auto":
        return max(0, min(available_cpus() - 1, MAX_AUTO_WORKERS))
    return int(requested)
