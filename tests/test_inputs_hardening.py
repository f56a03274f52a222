"""Users' files as `stride predict`, `explain` and `evaluate` read them (issue 27): every image mode Pillow
hands back scaled by its own depth, decoders picked by suffix only, non-finite arrays, `--out` on a file,
misshapen shard members, and a disk that fills up during `stride train`."""

from __future__ import annotations

import argparse
import errno
import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image
from test_hardening import replace_shard
from test_registry_support import stride
from tiny_data import tiny_dataset

from stride.errors import StrideError
from stride.pipelines.disk_full import disk_full_message
from stride.registry.evaluation import evaluate_network
from stride.serving import TensorSpec, get_serving
from stride.tasks import get_task

CLASSIFIER = get_task("classification")


def read(path: Path, shape: tuple[int, ...], task: str = "classification") -> np.ndarray:
    return get_serving(task).read_input(path, TensorSpec(shape))


def saved(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


# -- every mode, scaled by its depth -------------------------------------------------------------------

def test_a_16_bit_png_is_scaled_by_its_depth_not_clipped(tmp_path):
    stored = np.random.default_rng(0).integers(0, 65536, (32, 32), dtype=np.uint16)
    path = saved(Image.fromarray(stored), tmp_path / "deep.png")
    with Image.open(path) as image:
        assert image.mode == "I;16"
    np.testing.assert_allclose(read(path, (1, 32, 32))[0], stored / 65535, atol=1e-6)
    colour = read(path, (3, 32, 32))
    np.testing.assert_array_equal(colour[0], colour[2])
    assert abs(read(path, (1, 8, 8)).mean() - stored.mean() / 65535) < 0.01  # resized: the mean stays, no 0.996


def p_with_a_transparent_entry(path: Path) -> tuple[Path, np.ndarray]:
    image = Image.fromarray(np.array([[0, 1], [2, 0]], dtype=np.uint8), mode="P")
    image.putpalette([255, 0, 0, 0, 0, 255, 10, 20, 30])
    expected = np.array([[[255, 0, 0], [0, 0, 0]], [[10, 20, 30], [255, 0, 0]]]) / 255  # entry 1: transparent
    return saved(image, path.with_suffix(".png"), transparency=1), expected.transpose(2, 0, 1)


def la(path: Path) -> tuple[Path, np.ndarray]:
    grey, alpha = np.array([[200, 90]], dtype=np.uint8), np.array([[128, 255]], dtype=np.uint8)
    image = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)])
    return saved(image, path.with_suffix(".png")), (grey * (alpha / 255) / 255)[None]


def rgba(path: Path) -> tuple[Path, np.ndarray]:
    pixels = np.array([[[200, 100, 50, 128], [10, 20, 30, 0], [1, 2, 3, 255]]], dtype=np.uint8)
    expected = pixels[..., :3] * (pixels[..., 3:] / 255) / 255
    return saved(Image.fromarray(pixels, mode="RGBA"), path.with_suffix(".png")), expected.transpose(2, 0, 1)


def cmyk_tiff(path: Path) -> tuple[Path, np.ndarray]:
    inks = np.array([[[10, 20, 30, 40], [0, 0, 0, 0], [255, 0, 128, 0]]], dtype=np.uint8)
    expected = (1 - inks[..., :3] / 255) * (1 - inks[..., 3:] / 255)  # each ink darkens, black darkens all
    return saved(Image.fromarray(inks, mode="CMYK"), path.with_suffix(".tif")), expected.transpose(2, 0, 1)


def sixteen_bit_tiff(path: Path) -> tuple[Path, np.ndarray]:
    stored = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    return saved(Image.fromarray(stored), path.with_suffix(".tiff")), (stored / 65535)[None]


def float_tiff(path: Path) -> tuple[Path, np.ndarray]:
    stored = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    return saved(Image.fromarray(stored), path.with_suffix(".tif")), stored[None]


def eight_bit_grey(path: Path) -> tuple[Path, np.ndarray]:
    stored = np.array([[0, 128, 255]], dtype=np.uint8)
    return saved(Image.fromarray(stored), path.with_suffix(".png")), (stored / 255)[None]


@pytest.mark.parametrize("make, mode", [(p_with_a_transparent_entry, "P"), (la, "LA"), (rgba, "RGBA"),
                                        (cmyk_tiff, "CMYK"), (sixteen_bit_tiff, "I;16"), (float_tiff, "F"),
                                        (eight_bit_grey, "L")])
def test_every_mode_becomes_the_hand_computed_tensor(tmp_path, make, mode):
    path, expected = make(tmp_path / "image")
    with Image.open(path) as image:
        assert image.mode == mode  # what Pillow hands back, so each branch is the one tested
    tolerance = 1e-6 if mode in ("I;16", "F", "L") else 1.01 / 255  # 8-bit compositing rounds to a level
    np.testing.assert_allclose(read(path, expected.shape), expected, atol=tolerance)


@pytest.mark.parametrize("stored, refusal", [
    (np.array([[0.5, 2.5]], dtype=np.float32), r"float pixels range over \[0.5, 2.5\]"),
    (np.array([[0.5, np.nan]], dtype=np.float32), "float pixels include NaN or infinity"),
    (np.array([[7, 70000]], dtype=np.int32), r"32-bit integer pixels \(mode I\) have no known white level")])
def test_pixels_without_a_known_scale_are_refused_naming_the_file(tmp_path, stored, refusal):
    path = saved(Image.fromarray(stored), tmp_path / "odd.tif")
    with pytest.raises(StrideError, match=rf"{path}: {refusal}"):
        read(path, (1, 1, 2))


@pytest.mark.parametrize("task, shape", [("classification", (3, 16, 16)), ("detection", (3, 16, 16)),
                                         ("captioning", (3, 16, 16))])
def test_every_task_reads_images_through_the_same_reader(tmp_path, task, shape):
    stored = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 251)
    path = saved(Image.fromarray(stored), tmp_path / "deep.png")
    np.testing.assert_allclose(read(path, shape, task), np.repeat((stored / 65535)[None], 3, axis=0), atol=1e-6)


# -- decoders chosen by suffix -------------------------------------------------------------------------

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
       b"0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n")


@pytest.mark.parametrize("task", ["classification", "detection", "captioning"])
def test_an_eps_named_png_is_refused_without_ghostscript(tmp_path, monkeypatch, task):
    started = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: started.append(args))
    path = tmp_path / "photo.png"
    path.write_bytes(EPS)
    with pytest.raises(StrideError, match=f"{path}: not a readable PNG image"):
        read(path, (3, 16, 16), task)
    assert not started


@pytest.mark.parametrize("content, suffix, decoder", [("PNG", ".jpg", "JPEG"), ("PNG", ".tif", "TIFF"),
                                                      ("TIFF", ".png", "PNG"), ("BMP", ".jpeg", "JPEG")])
def test_an_image_is_decoded_only_as_its_suffix_says(tmp_path, content, suffix, decoder):
    buffer = io.BytesIO()
    Image.new("L", (4, 4), 9).save(buffer, format=content)
    path = tmp_path / f"image{suffix}"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(StrideError, match=f"{path}: not a readable {decoder} image"):
        read(path, (1, 4, 4))


def test_other_suffixes_are_refused_naming_the_accepted_ones(tmp_path):
    path = saved(Image.new("L", (4, 4)), tmp_path / "image.bmp")
    with pytest.raises(StrideError, match=r"unsupported file type \.bmp \(use \.png, \.jpg, \.jpeg, \.tif, \.tiff, "
                                          r"\.npy\)"):
        read(path, (1, 4, 4))


# -- arrays --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_npy_with_non_finite_values_is_refused_naming_the_file(tmp_path, bad):
    array = np.zeros((1, 4, 4), dtype=np.float32)
    array[0, 1, :2] = bad
    path = tmp_path / "broken.npy"
    np.save(path, array)
    with pytest.raises(StrideError, match=f"{path}: array holds 2 NaN or infinite values"):
        read(path, (1, 4, 4))


# -- --out on a file -----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["predict", "explain"])
@pytest.mark.parametrize("below", ["", "pictures"])
def test_out_on_an_existing_file_is_refused_before_any_work(tmp_path, capsys, command, below):
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    out = taken / below if below else taken
    image = saved(Image.new("L", (4, 4)), tmp_path / "image.png")
    source = ["--model", "models:/absent/1"] if command == "predict" else ["--checkpoint", tmp_path / "absent.ckpt"]
    code, _, err = stride(capsys, command, image, *source, "--out", out, "--tracking-uri", "http://127.0.0.1:9")
    where = "is a file" if not below else f"is inside {taken}, which is a file"
    assert code == 2 and f"stride: error: --out {out}: {where}" in err and "Traceback" not in err
    assert taken.read_text() == "keep me"


# -- evaluate on a misshapen shard member --------------------------------------------------------------

def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_evaluate_names_the_shard_and_sample_of_a_misshapen_member(tmp_path):
    dataset = tiny_dataset(tmp_path / "data", ["a", "b"])
    replace_shard(dataset, "test-000000.tar", {"s0.png": png_bytes(4, 4), "s0.cls": b"0",
                                               "s1.png": png_bytes(5, 4), "s1.cls": b"1",
                                               "s2.png": png_bytes(4, 4), "s2.cls": b"0"})
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2), torch.nn.Softmax(dim=1))
    with pytest.raises(StrideError, match=rf"shard {dataset / 'test-000000.tar'}, sample 's1': \.png has shape "
                                          r"\[1, 4, 5\]; the manifest's sample_schema gives \[1, 4, 4\]"):
        evaluate_network(get_serving("classification"), network, CLASSIFIER.evaluation_data(dataset), "test",
                         input_shape=(1, 4, 4))


# -- a full disk ---------------------------------------------------------------------------------------

def test_a_write_to_a_full_device_names_where_the_command_writes(tmp_path):
    with pytest.raises(OSError) as raised, open("/dev/full", "wb") as full:  # the kernel's always-full device
        full.write(b"x" * 65536)
        full.flush()
    assert raised.value.errno == errno.ENOSPC and raised.value.filename is None  # a plain write names no file
    args = argparse.Namespace(command="predict", out=str(tmp_path / "pictures"),
                              tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert disk_full_message(raised.value, args) == (
        f"disk full: no space left on the device where predict writes (--out {tmp_path / 'pictures'}, the tracking "
        f"database {tmp_path / 'mlruns.db'}); free some space and run it again")


def stride_process(prelude: str, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """`stride ARGV` in a process of its own, all its output captured, after `prelude` set up the failure."""
    code = f"{prelude}\nimport sys\nfrom stride.pipelines.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True, text=True, timeout=600)


def train_tiny(prelude: str, tmp_path: Path, tracking_db: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    """A one-epoch `stride train` that logs every step (so the tracking database grows while it trains)."""
    return stride_process(prelude, tmp_path, "train", "digits-cnn", "--tracking-uri", f"sqlite:///{tracking_db}",
                          "--set", *overrides, "trainer.max_epochs=1", "data.batch_size=16",
                          "trainer.log_every_n_steps=1", "tracking.experiment=tests")


@pytest.mark.slow
def test_a_full_tracking_database_during_train_is_one_clear_error(tmp_path, tiny_overrides):
    """SQLite answers "database or disk is full" as on a full disk when a database reaches `PRAGMA
    max_page_count`: MLflow makes the database, it is compacted, and every connection the training takes
    from a pool is capped at that size."""
    from stride.tracking.store import ensure_experiment

    db = tmp_path / "tracking" / "mlruns.db"
    ensure_experiment(f"sqlite:///{db}", "tests")
    with sqlite3.connect(db) as connection:
        connection.execute("VACUUM")  # no free pages left: new rows must grow the file
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
    cap = (f"from pathlib import Path\nfrom sqlalchemy import event\nfrom sqlalchemy.pool import Pool\n"
           f"def cap(connection, record, proxy):\n"
           f"    if Path(connection.execute('PRAGMA database_list').fetchone()[2]) == Path({str(db)!r}):\n"
           f"        connection.execute('PRAGMA max_page_count = {pages}')\n"
           f"event.listen(Pool, 'checkout', cap)")
    done = train_tiny(cap, tmp_path, db, tiny_overrides)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (f"stride: error: disk full: the tracking database {db} cannot be "
                                                    "written; free some space and run it again")
    assert "training digits-cnn" in done.stdout and "Traceback" not in done.stderr  # it failed while training


@pytest.mark.slow
def test_a_full_disk_under_a_file_copy_during_train_names_the_file(tmp_path, tiny_overrides):
    full = ("import errno, os\n"
            "def sendfile(*args):\n"
            "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
            "os.sendfile = sendfile  # the kernel call under every file copy (MLflow's artifacts, moved checkpoints)")
    done = train_tiny(full, tmp_path, tmp_path / "mlruns.db", tiny_overrides)
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"stride: error: disk full: no space left on the device writing {tmp_path}"), last
    assert "Traceback" not in done.stderr
