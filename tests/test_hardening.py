"""What an attacker or an unlucky user does: hostile names, kills at every step, bad numbers, bombs."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_data import tiny_dataset

from stride.datamodules.manifest import read_manifest, sha256_of, verify_shards
from stride.datamodules.swap import journal_path
from stride.errors import StrideError
from stride.registry.samples import write_sample_images

ROOT = Path(__file__).resolve().parents[1]


def replace_shard(dataset: Path, shard_name: str, members: dict[str, bytes]) -> None:
    """Write a shard with exactly these member names and make the manifest vouch for it."""
    path = dataset / shard_name
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    manifest = json.loads((dataset / "manifest.json").read_text())
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            if shard["name"] == shard_name:
                shard.update(num_bytes=path.stat().st_size, sha256=sha256_of(path))
    (dataset / "manifest.json").write_text(json.dumps(manifest))


# -- files written outside their folder ----------------------------------------------------------------

@pytest.mark.parametrize("member", ["../../escaped", "/tmp/stride-absolute"])
def test_shards_with_escaping_member_names_are_refused_naming_shard_and_member(tmp_path, member):
    dataset = tiny_dataset(tmp_path / "data", ["a", "b"])
    png = io.BytesIO()
    Image.new("L", (4, 4)).save(png, format="PNG")
    replace_shard(dataset, "test-000000.tar", {f"{member}.png": png.getvalue(), f"{member}.cls": b"0"})
    out = tmp_path / "deep" / "out"
    with pytest.raises(StrideError, match=rf"test-000000.tar: member '{member}.png' is not a plain relative name"):
        write_sample_images(dataset, out, count=2)
    assert not (tmp_path / "escaped.png").exists() and not list(tmp_path.glob("**/escaped*"))


def test_class_names_with_slashes_become_safe_file_names(tmp_path):
    dataset = tiny_dataset(tmp_path / "data", ["T-shirt/top", "../../up"])
    written = write_sample_images(dataset, tmp_path / "out", count=3)
    assert [path.parent for path, _ in written] == [tmp_path / "out"] * 3
    assert {path.name.split("-", 1)[1] for path, _ in written} <= {"T-shirt_top.png", "up.png"}
    assert {name for _, name in written} <= {"T-shirt/top", "../../up"}  # the true names are still reported


def test_names_users_give_for_folders_are_refused(tmp_path):
    from stride.tuning.search import resume_search

    with pytest.raises(StrideError, match=r"--resume '\.\./x' is not a plain name"):
        resume_search("../x", storage=str(tmp_path))


# -- the replace window ---------------------------------------------------------------------------------

KILLER = """
import os, shutil, sys
from pathlib import Path
calls = 0
def dying(real):
    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == int(sys.argv[2]):
            os._exit(137)  # killed right here: nothing after this step happens
        return real(*args, **kwargs)
    return call
sys.path.insert(0, sys.argv[3])
from tiny_data import tiny_dataset
os.rename, os.replace, os.unlink, shutil.rmtree = (dying(os.rename), dying(os.replace), dying(os.unlink),
                                                   dying(shutil.rmtree))
tiny_dataset(Path(sys.argv[1]), ["new-a", "new-b"], seed=1, overwrite=True)
"""


def test_a_kill_at_any_step_of_a_replacement_leaves_one_complete_dataset(tmp_path):
    """Kill a replacing prepare at each file-system step of the swap; afterwards any stride command that
    opens the dataset finds exactly one complete dataset, old or new, and nothing deletes it."""
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    outcomes = []
    for step in range(1, 12):
        target = tmp_path / f"step{step}" / "data"
        tiny_dataset(target, ["old-a", "old-b"])
        done = subprocess.run([sys.executable, script, target, str(step), str(ROOT / "tests")], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode in (0, 137), done.stderr[-2000:]
        manifest = read_manifest(target)  # any stride command: rolls an interrupted swap forward
        verify_shards(target, manifest)
        assert manifest.class_names in (["old-a", "old-b"], ["new-a", "new-b"])
        assert not journal_path(target).exists()
        leftovers = [p.name for p in target.parent.iterdir() if p.name != "data"]
        tiny_dataset(tmp_path / f"step{step}" / "other", ["x"])  # a later prepare next to it deletes nothing needed
        assert read_manifest(target).class_names == manifest.class_names
        outcomes.append((done.returncode, manifest.class_names[0], leftovers))
        if done.returncode == 0:
            break
    assert outcomes[-1][0] == 0 and len(outcomes) >= 4  # every step of the swap was killed once
    assert {name for _, name, _ in outcomes} == {"old-a", "new-a"}


# -- missing checks -------------------------------------------------------------------------------------

def test_manifest_totals_must_match_their_shards(tmp_path):
    dataset = tiny_dataset(tmp_path / "data", ["a", "b"])
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["splits"]["train"]["num_samples"] += 1
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StrideError, match=r"split 'train' says num_samples 7, but its shards hold 6"):
        read_manifest(dataset)


def test_a_corrupt_gzip_source_is_named(tmp_path):
    from stride.datamodules.sources.mnist_idx import IMAGES_MAGIC, read_idx

    good = gzip.compress(struct.pack(">IIII", IMAGES_MAGIC, 2, 2, 2) + bytes(8))
    broken = bytearray(good)
    broken[12:20] = b"\xff" * 8  # inside the deflate stream
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(bytes(broken))
    with pytest.raises(StrideError, match=r"train-images-idx3-ubyte.gz: cannot read"):
        read_idx(tmp_path / "train-images-idx3-ubyte.gz", IMAGES_MAGIC)


def test_negative_labels_are_called_negative(tmp_path):
    from stride.datamodules.sequence_shards import prepare_sequences

    np.savez(tmp_path / "s.npz", x=np.zeros((10, 4), np.float32), y=np.array([0, 1, -1] + [0] * 7))
    with pytest.raises(StrideError, match=r"y holds a negative label \(-1 at index 2\)"):
        prepare_sequences(tmp_path / "s.npz", tmp_path / "out")


def bomb(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header claims width x height pixels."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("width, limit", [(100_000, 50_000_000), (8_000, 50_000_000), (100_000, 6_000_000_000)])
def test_decompression_bombs_are_refused_from_their_header(tmp_path, width, limit):
    """Refused from the header, never decoded, whichever of PIL's check and stride's limit comes first."""
    from stride.serving import TensorSpec, get_serving

    started = time.monotonic()
    with pytest.raises(StrideError, match=r"bomb.png: .*(decompression bomb|more than the limit)"):
        get_serving("classification").read_input(bomb(tmp_path / "bomb.png", width, width), TensorSpec((1, 28, 28)),
                                              max_pixels=limit)
    assert time.monotonic() - started < 2


def test_an_unanswering_tracking_server_fails_within_seconds():
    from stride.tracking.store import REACHABLE_TIMEOUT_S, check_reachable

    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        started = time.monotonic()
        with pytest.raises(StrideError, match=r"unreachable \(no answer within"):
            check_reachable(f"http://127.0.0.1:{server.getsockname()[1]}")
        assert time.monotonic() - started < REACHABLE_TIMEOUT_S + 2


@pytest.mark.parametrize("override, key", [("optim.lr=.inf", "optim.lr"),
                                           ("optim.weight_decay=.nan", "optim.weight_decay"),
                                           ("model.channels=.inf", "model.channels"),
                                           ("schedule.gamma=-.inf", "schedule.gamma")])
def test_non_finite_numbers_in_configs_are_refused(override, key):
    from stride.config import load_config

    with pytest.raises(StrideError, match=rf"{key}: .*(finite|valid integer|greater than 0)"):
        load_config("digits-cnn", ["data.path=x", override])


def test_a_shutil_free_swap_keeps_a_dataset_when_nothing_is_killed(tmp_path):
    target = tiny_dataset(tmp_path / "data", ["old"])
    tiny_dataset(target, ["new"], overwrite=True)
    assert read_manifest(target).class_names == ["new"] and [p.name for p in tmp_path.iterdir()] == ["data"]
    shutil.rmtree(target)


# -- signals, kill -9 and diverging runs: real `stride train` processes, a real MLflow server ----------------

def stride_train(workdir: Path, uri: str, experiment: str, digits_shards: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stride.pipelines.cli", "train", "digits-cnn", "--tracking-uri", uri, "--set",
         f"data.path={digits_shards}", "model.channels=4", "trainer.enable_progress_bar=false",
         f"tracking.experiment={experiment}", *overrides],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def runs_of(uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    found = MlflowClient(uri).get_experiment_by_name(experiment)
    return MlflowClient(uri).search_runs([found.experiment_id]) if found else []


def wait_for_a_running_run(uri: str, experiment: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if any(r.info.status == "RUNNING" for r in runs_of(uri, experiment)):
            time.sleep(3)  # into the training loop
            return
        time.sleep(0.5)
    raise AssertionError(f"no run started: {process.communicate()[1][-2000:] if process.poll() is not None else ''}")


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(2, 130), (15, 143)])
def test_a_stopped_training_exits_128_plus_the_signal_and_its_run_is_killed(tmp_path, mlflow_server, digits_shards,
                                                                            signum, code):
    experiment = f"stopped-{signum}"
    process = stride_train(tmp_path, mlflow_server, experiment, digits_shards, "trainer.max_epochs=200")
    wait_for_a_running_run(mlflow_server, experiment, process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err[-2000:]
    assert f"stride train: stopped by {'SIGINT' if signum == 2 else 'SIGTERM'}" in err
    assert [r.info.status for r in runs_of(mlflow_server, experiment)] == ["KILLED"]


@pytest.mark.slow
def test_a_kill_9_leaves_no_ghost_run_once_stride_touches_the_experiment(tmp_path, mlflow_server, digits_shards):
    process = stride_train(tmp_path, mlflow_server, "ghosts", digits_shards, "trainer.max_epochs=200")
    wait_for_a_running_run(mlflow_server, "ghosts", process)
    process.kill()
    process.communicate(timeout=60)
    [ghost] = runs_of(mlflow_server, "ghosts")
    assert ghost.info.status == "RUNNING" and ghost.data.tags["stride.pid"] == str(process.pid)
    later = stride_train(tmp_path, mlflow_server, "ghosts", digits_shards, "trainer.max_epochs=1")
    assert later.wait(timeout=300) == 0
    statuses = {r.info.run_id: r.info.status for r in runs_of(mlflow_server, "ghosts")}
    assert statuses[ghost.info.run_id] == "FAILED" and sorted(statuses.values()) == ["FAILED", "FINISHED"]


@pytest.mark.slow
def test_a_diverging_run_stops_fails_and_logs_no_model(tmp_path, mlflow_server, digits_shards):
    process = stride_train(tmp_path, mlflow_server, "diverging", digits_shards, "optim.lr=1000000",
                           "trainer.max_epochs=3")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2 and "training diverged: the loss became NaN or infinite" in err, err[-2000:]
    [run] = runs_of(mlflow_server, "diverging")
    assert run.info.status == "FAILED" and "stride.model_uri" not in run.data.tags
