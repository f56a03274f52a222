"""Plugins named by file in $STRIDE_PLUGINS: found from any working folder, and an object of a plugin's class
unpickles in a fresh process (a Ray worker given a trial's config) without anyone loading the plugins first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PLUGIN = Path(__file__).with_name("toy_task.py")

WRITE = """
import pickle, sys
from stride.config.loading import validate
config = validate({"task": "toy_regression", "data": {"path": "x", "input_noise": 0.5},
                   "model": {"architecture": "toy_mlp"}}, "test")
from stride.tuning.cluster import TrialResources
# as Ray hands a trial's job to its workers: a stride object first (importing stride installs the finder)
open(sys.argv[1], "wb").write(pickle.dumps({"resources": TrialResources(), "config": config}))
"""
READ = """
import pickle, sys
config = pickle.loads(open(sys.argv[1], "rb").read())["config"]
print(type(config).__name__, config.data.input_noise)
"""


def python(code: str, *args: str, cwd: Path, plugins: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STRIDE_PLUGINS": plugins}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_plugin_config_pickled_in_one_process_unpickles_in_another(tmp_path):
    relative = os.path.relpath(PLUGIN, PLUGIN.parent.parent)  # tests/toy_task.py, from the checkout
    written = python(WRITE, str(tmp_path / "config.pkl"), cwd=PLUGIN.parent.parent, plugins=relative)
    assert written.returncode == 0, written.stderr[-3000:]
    elsewhere = tmp_path / "trial-folder"  # another working folder, as a Ray trial has
    elsewhere.mkdir()
    read = python(READ, str(tmp_path / "config.pkl"), cwd=elsewhere, plugins=str(PLUGIN))
    assert read.returncode == 0, read.stderr[-3000:]
    assert read.stdout.split() == ["ToyConfig", "0.5"]


def test_a_missing_plugin_file_is_one_clear_error(tmp_path):
    done = python("from stride.tasks import get_task; get_task('nope')", cwd=tmp_path,
                  plugins=str(tmp_path / "absent.py"))
    assert done.returncode != 0 and "$STRIDE_PLUGINS: cannot import" in done.stderr and "absent.py" in done.stderr
