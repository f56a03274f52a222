"""`stride submit` and `stride jobs` against a real Ray head started on 127.0.0.1 by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest
from conftest import free_port

pytestmark = pytest.mark.slow


class Outcome:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def stride(capsys):
    """The CLI in-process (Ray's job SDK imports once instead of once per command)."""
    from stride.pipelines.cli import main

    def run(*args: str) -> Outcome:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Outcome(code, out, err)

    return run


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` in its own session and temp dir, so tearing it down touches no other Ray.

    A head that exits before its dashboard answers (a port taken between `free_port` and Ray's bind) is started once
    more on fresh ports; its own output is kept so a second failure says why.
    """
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    head = None
    try:
        for attempt in (1, 2):
            head, address, log_path = _start_head(temp_dir, attempt)
            if wait_for_dashboard(address, 150, head):
                break
            _stop_head(head)
            if attempt == 2:
                raise RuntimeError(f"Ray head {address} did not answer within 150 s (exit {head.poll()}); "
                                   f"its output ends:\n{_tail(log_path)}")
        yield address
    finally:
        if head is not None:
            _stop_head(head)
        _kill_leftovers(temp_dir)


def _start_head(temp_dir: str, attempt: int) -> tuple[subprocess.Popen, str, str]:
    dashboard_port = free_port()
    log_path = os.path.join(temp_dir, f"head-{attempt}.log")
    with open(log_path, "wb") as log:
        head = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--port", str(free_port()),
             "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--dashboard-port",
             str(dashboard_port), "--include-dashboard", "true", "--num-cpus", "1", "--temp-dir", temp_dir,
             "--disable-usage-stats",
             # every other fixed default port too (52365, 10001, ...): a leftover or parallel Ray holding one must not
             # make this head fail to start
             *(item for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                 "--ray-client-server-port", "--runtime-env-agent-port", "--metrics-export-port")
               for item in (flag, str(free_port())))],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return head, f"http://127.0.0.1:{dashboard_port}", log_path


def _stop_head(head: subprocess.Popen) -> None:
    """The head's whole process group; one that already exited (the group is gone) is fine."""
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(head.pid, sig)
        except ProcessLookupError:
            break
        try:
            head.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue


def _tail(path: str, lines: int = 40) -> str:
    with open(path, errors="replace") as log:
        return "".join(log.readlines()[-lines:])


def wait_for_dashboard(address: str, timeout_s: float, head: subprocess.Popen) -> bool:
    """True once the dashboard answers; any HTTP answer counts (with Ray's token authentication on, 401)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and head.poll() is None:
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.5)
    return False


def _kill_leftovers(temp_dir: str) -> None:
    """Ray daemons that left the head's process group still name its private temp dir."""
    found = subprocess.run(["pgrep", "-f", temp_dir], capture_output=True, text=True).stdout.split()
    for pid in found:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_submit_uploads_the_working_dir_and_waits_for_success(ray_head, stride, tmp_path):
    (tmp_path / "payload.txt").write_text("shipped")
    (tmp_path / "ray_results").mkdir()
    (tmp_path / "ray_results" / "big.bin").write_bytes(b"x" * 1000)  # local output: excluded
    result = stride("submit", "--address", ray_head, "--working-dir", str(tmp_path), "--env", "STRIDE_PROBE=42",
                    "--wait", "--", "python", "-c",
                    "import os, pathlib, stride; print('payload', pathlib.Path('payload.txt').read_text(), "
                    "os.environ['STRIDE_PROBE'], pathlib.Path('ray_results').exists())")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "payload shipped 42 False" in result.stdout
    job_id = result.stdout.split("submitted job ", 1)[1].split(":", 1)[0]
    status = stride("jobs", "status", job_id, "--address", ray_head)
    assert status.returncode == 0 and f"{job_id}: SUCCEEDED" in status.stdout
    logs = stride("jobs", "logs", job_id, "--address", ray_head)
    assert "payload shipped" in logs.stdout
    listed = stride("jobs", "list", "--address", ray_head)
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout


def test_jobs_stop_ends_a_running_job(ray_head, stride, tmp_path):
    submitted = stride("submit", "--address", ray_head, "--working-dir", str(tmp_path), "--job-id", "sleeper",
                       "--", "python", "-c", "import time; time.sleep(300)")
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    stopped = stride("jobs", "stop", "sleeper", "--address", ray_head)
    assert stopped.returncode == 0 and "stop requested" in stopped.stdout
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = stride("jobs", "status", "sleeper", "--address", ray_head).stdout
        if "STOPPED" in status:
            break
        time.sleep(0.5)
    assert "sleeper: STOPPED" in status


def test_unreachable_dashboard_and_unknown_job_fail_clearly(ray_head, stride, tmp_path):
    started = time.monotonic()
    result = stride("submit", "--address", f"http://127.0.0.1:{free_port()}", "--working-dir", str(tmp_path), "--",
                    "stride", "tune", "--list")
    assert result.returncode == 2 and "is unreachable" in result.stderr and time.monotonic() - started < 30
    missing = stride("jobs", "status", "no-such-job", "--address", ray_head)
    assert missing.returncode == 2 and "no job 'no-such-job'" in missing.stderr
    empty = stride("submit", "--address", ray_head)
    assert empty.returncode == 2 and "nothing to run" in empty.stderr
