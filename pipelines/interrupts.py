"""Stopping stride with a signal: Ctrl-C (SIGINT) and SIGTERM (schedulers, Kubernetes, `timeout`).

Both unwind the command like Ctrl-C, so an open MLflow run ends KILLED, Lightning tears
down, and a search records its saved state for `--resume`. The command then exits 128 + the
signal's number (130, 143) and says what was stopped. Lightning turns an interrupt into
`SystemExit(1)` on its way out; the watch remembers the signal, so the exit code is still the
signal's.

Ctrl-C during a search first reaches Ray Tune's own handler, which stops the trials and saves
the state; Ray's processes ignore SIGINT, so they are there to do it. SIGTERM stops at once:
`timeout`, Slurm and systemd send it to the whole process group, Ray's processes included, so
nothing may wait on them. `timeout` sends it twice (to the process, then to its group): a
repeated SIGTERM is ignored, so it cannot cut the clean-up short.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

WATCHED = (signal.SIGINT, signal.SIGTERM)


class SignalWatch:
    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGTERM and self.received == signal.SIGTERM:
            return
        self.received = self.received or signum
        raise KeyboardInterrupt

    def __enter__(self) -> SignalWatch:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for signum in WATCHED:
                self._previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def exit_code(self) -> int:
        return 128 + (self.received or signal.SIGINT)

    def describe(self) -> str:
        return signal.Signals(self.received or signal.SIGINT).name
