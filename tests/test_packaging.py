"""A built wheel works outside the repository: only `stride.*` is installed, recipes and specs ship with it.

The fresh venv borrows the test environment's dependencies through a `.pth` line (torch
alone is gigabytes) but not its editable stride, which that environment wires through a
`.pth` file of its own site-packages that the fresh venv never reads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", "mlartifacts", "checkpoints", "ray_results",
        "shards"}


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_wheel_installs_into_a_fresh_venv_and_trains(tmp_path, digits_shards):
    source = tmp_path / "source"  # a clean copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT, source, ignore=lambda folder, names: [n for n in names if n in SKIP or
                                                                 n.endswith((".egg-info", ".db"))])
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path / "wheels", source)
    [wheel] = (tmp_path / "wheels").glob("stride-*.whl")

    venv = tmp_path / "fresh"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(python, "-m", "pip", "install", "--no-deps", "--quiet", wheel)

    installed = {p.name for p in site.iterdir()}
    assert "stride" in installed and not installed & {"pipelines", "tuning", "datamodules", "lightning_modules",
                                                      "architectures", "tracking", "registry", "benchmarking"}
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}"}
    where = run(python, "-c", "import stride.pipelines.cli as c, stride.config.recipes as r; "
                "print(c.__file__); print(r.__file__)", cwd=tmp_path, env=env).stdout.split()
    assert all(path.startswith(str(site)) for path in where), where

    recipes = run(venv / "bin" / "stride", "recipes", cwd=tmp_path, env=env).stdout
    assert "digits-cnn" in recipes and "tcn-seqmnist-single" in recipes
    specs = run(venv / "bin" / "stride", "tune", "--list", cwd=tmp_path, env=env).stdout
    assert "quickstart-search" in specs
    trained = run(venv / "bin" / "stride", "train", "digits-cnn", "--set", f"data.path={digits_shards}",
                  "trainer.max_epochs=1", "model.channels=4", "trainer.enable_progress_bar=false",
                  f"trainer.checkpoint_dir={tmp_path / 'checkpoints'}", cwd=tmp_path, env=env).stdout
    assert "test_acc=" in trained and "models:/m-" in trained
    assert "training digits-cnn: digits_cnn with 1,044 parameters on 1,257 training samples" in trained
