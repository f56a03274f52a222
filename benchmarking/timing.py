"""Timing that means what it says on an asynchronous device."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now_s(device: torch.device) -> float:
    """Wall time after everything queued on `device` has finished."""
    synchronize(device)
    return time.perf_counter()


def cpu_s() -> float:
    """CPU time of this process, all threads (not loader workers): on a shared CPU it is
    far less disturbed by other jobs than wall time."""
    return time.process_time()


@dataclass
class Throughput:
    samples: int
    seconds: float
    cpu_seconds: float | None = None

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds

    def as_dict(self) -> dict[str, float]:
        found = {"samples": self.samples, "seconds": round(self.seconds, 6),
                 "samples_per_s": round(self.samples_per_s, 3)}
        if self.cpu_seconds is not None:
            found["cpu_seconds"] = round(self.cpu_seconds, 6)
        return found
