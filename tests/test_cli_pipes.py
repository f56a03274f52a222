"""`stride` as the first command of a shell pipeline: a reader that stops early (`| head -1`) ends the listing
quietly with the shell's SIGPIPE status, not a BrokenPipeError traceback. The reader here is `true`, which exits
without reading, so every write meets a closed pipe."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("command", ["recipes", "study list"])
def test_a_reader_that_stops_early_gets_no_traceback(command):
    pipeline = f"{sys.executable} -m stride.pipelines.cli {command} | true; echo \"status ${{PIPESTATUS[0]}}\""
    done = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.stdout.strip() == "status 141"
