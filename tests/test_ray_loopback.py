"""An embedded Ray (`stride tune` without --address) listens on loopback only: every server of its
process tree, GCS, raylet, workers, agents and metrics endpoints included, seen with psutil."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow


def listening(root: psutil.Process) -> set[tuple[str, str, int]]:
    found = set()
    for process in [root, *root.children(recursive=True)]:
        try:
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN:
                    found.add((process.name(), connection.laddr.ip, connection.laddr.port))
        except psutil.Error:  # a worker that just ended
            continue
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_an_embedded_search_binds_every_port_to_loopback(tmp_path: Path, digits_shards: Path):
    spec = {"base": "digits-cnn", "overrides": [f"data.path={digits_shards}", "model.channels=4",
                                                "trainer.max_epochs=2", "data.batch_size=128",
                                                "tracking.log_model=false"],
            "space": {"optim.lr": {"grid": [0.05, 0.02]}}, "num_samples": 1, "scheduler": "fifo"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.pop("RAY_AUTH_MODE", None)  # as a user runs it: Ray's default authentication
    env["MLFLOW_TRACKING_URI"] = ""
    driver = subprocess.Popen([sys.executable, "-m", "stride.pipelines.cli", "tune", "--config", "spec.yaml"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[tuple[str, str, int]] = set()
    root = psutil.Process(driver.pid)
    while driver.poll() is None:
        seen |= listening(root)
        time.sleep(0.3)
    output = driver.communicate()[0]
    assert driver.returncode == 0, output[-3000:]
    names = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= names, seen  # the servers were running while we looked
    exposed = sorted(s for s in seen if not is_loopback(s[1]))
    assert exposed == [], f"listening beyond loopback: {exposed}"
