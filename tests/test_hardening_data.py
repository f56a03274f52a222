"""Hostile or unlucky data: forged journals and manifests, bombs, unexpected formats, full disks."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import re
import shutil
import struct
import tarfile
import textwrap
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError
from tiny_data import tiny_dataset

from stride.datamodules.manifest import manifest_sha256, read_manifest
from stride.datamodules.swap import journal_path
from stride.errors import StrideError

# -- swap journals: recovery touches only the siblings it made, holding the datasets it recorded ----------

def forge_journal(dataset: Path, **fields: object) -> None:
    journal_path(dataset).write_text(json.dumps(fields))


@pytest.mark.parametrize("fields", [
    {"target": "DATA", "new": "NOTHING", "old": "VICTIM"},  # the old form, absolute paths: deleted VICTIM
    {"target": "DATA", "new": "OTHER", "old": "ASIDE"},  # put OTHER in place of the dataset
    {"format": 1, "new": "1-abc", "old": "../../victim", "new_manifest_sha256": "0" * 64,
     "old_manifest_sha256": "0" * 64},
])
def test_a_forged_journal_naming_folders_elsewhere_touches_nothing(tmp_path, fields):
    target, other, victim = (tiny_dataset(tmp_path / name, [name]) for name in ("data", "other", "victim"))
    substitutes = {"DATA": str(target), "OTHER": str(other), "VICTIM": str(victim),
                   "NOTHING": str(tmp_path / "nothing"), "ASIDE": str(tmp_path / "aside")}
    forge_journal(target, **{key: substitutes.get(value, value) for key, value in fields.items()})
    with pytest.raises(StrideError, match=r"\.data\.stride-swap\.json: .*(not a stride swap journal|field 'old')"):
        read_manifest(target)
    with pytest.raises(StrideError, match=r"\.data\.stride-swap\.json"):
        tiny_dataset(tmp_path / "data", ["new"], overwrite=True)
    for folder, name in ((target, "data"), (other, "other"), (victim, "victim")):
        assert folder.is_dir() and json.loads((folder / "manifest.json").read_text())["class_names"] == [name]


def test_a_journal_whose_siblings_hold_other_datasets_touches_nothing(tmp_path):
    """Tokens in the right form, beside the target, but the folders hold datasets the journal did not record."""
    target = tiny_dataset(tmp_path / "data", ["data"])
    old = tiny_dataset(tmp_path / ".data.stride-tmp-1-oldabcd", ["precious"])
    recorded = manifest_sha256(target)
    forge_journal(target, format=1, new="1-missing", old="1-oldabcd", new_manifest_sha256=recorded,
                  old_manifest_sha256="f" * 64)
    with pytest.raises(StrideError, match=r"says .*\.data\.stride-tmp-1-oldabcd holds the old dataset .* but it "
                                          r"holds a dataset whose manifest"):
        read_manifest(target)
    assert read_manifest(old).class_names == ["precious"] and journal_path(target).exists()
    journal_path(target).unlink()
    assert read_manifest(target).class_names == ["data"]


def test_a_journal_cannot_put_another_folder_in_place_of_the_dataset(tmp_path):
    target = tiny_dataset(tmp_path / "data", ["data"])
    intruder = tiny_dataset(tmp_path / ".data.stride-tmp-1-abc", ["intruder"])
    forge_journal(target, format=1, new="1-abc", old="1-oldabc", new_manifest_sha256="a" * 64,
                  old_manifest_sha256=manifest_sha256(target))
    with pytest.raises(StrideError, match=r"holds the new dataset"):
        read_manifest(target)
    assert read_manifest(intruder).class_names == ["intruder"]
    journal_path(target).unlink()
    assert read_manifest(target).class_names == ["data"]
    shutil.rmtree(intruder)


# -- manifests -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../elsewhere.tar", "/tmp/stride-elsewhere.tar", "sub/train-000000.tar",
                                  ".hidden.tar"])
def test_shard_names_in_a_manifest_must_be_plain_names(tmp_path, name):
    """Before, a manifest could point at a shard anywhere (with its size and sha256) and it was read."""
    dataset = tiny_dataset(tmp_path / "a" / "b" / "data", ["x"])
    manifest = json.loads((dataset / "manifest.json").read_text())
    shard = manifest["splits"]["test"]["shards"][0]
    elsewhere = dataset / name if not name.startswith("/") else Path(name)
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(dataset / shard["name"], elsewhere)
    shard["name"] = name
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StrideError, match=rf"data/manifest.json: invalid manifest at splits.test.shards.0.name: "
                                          rf".*shard name '{re.escape(name)}' is not a plain name"):
        read_manifest(dataset)
    elsewhere.unlink()


# -- a full disk --------------------------------------------------------------------------------------------

def disk_with_room_for(capacity: int) -> Callable[..., io.BufferedWriter]:
    """`open` for the writer's files on a disk that fills after `capacity` bytes: every later write, and the
    flush when the file is closed, fail with ENOSPC as they would for real."""
    used = 0

    class FillingFile(io.FileIO):
        def write(self, data) -> int:
            nonlocal used
            if used + len(data) > capacity:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            used += len(data)
            return super().write(data)

    return lambda path, mode: io.BufferedWriter(FillingFile(path, mode.replace("b", "")))


def test_a_full_disk_during_a_replacement_is_one_clear_error_and_the_next_attempt_runs(tmp_path, monkeypatch,
                                                                                        capsys):
    import stride.datamodules.writer as writer
    from stride.pipelines.cli import main

    target = tmp_path / "data"
    prepare = ["data", "prepare", "digits", "--out", str(target), "--overwrite"]
    assert main(prepare) == 0
    before = manifest_sha256(target)
    capsys.readouterr()
    with monkeypatch.context() as patched:
        patched.setattr(writer, "open", disk_with_room_for(100_000), raising=False)
        assert main(prepare + ["--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert f"stride: error: disk full while writing the dataset {target}: No space left on device" in err
    assert "Traceback" not in err and "existing dataset there is untouched" in err
    assert [p.name for p in tmp_path.iterdir()] == ["data"] and manifest_sha256(target) == before
    assert main(prepare + ["--seed", "1"]) == 0 and read_manifest(target).parameters["seed"] == 1


# -- YAML and JSON nested past any reason ----------------------------------------------------------------

def alias_bomb(levels: int) -> str:
    """`levels` lists of nine aliases of the list before: 9 ** levels strings from a few hundred bytes."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def refused_cheaply(call: Callable[[], object], message: str) -> tuple[float, int]:
    """Check `call` raises a StrideError matching `message`; its (seconds, peak bytes allocated)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(StrideError, match=message):
            call()
        return time.monotonic() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["recipe", "search spec"])
def test_a_yaml_alias_bomb_is_refused_while_it_is_read(tmp_path, kind):
    """8 levels in 500 bytes: before, validating `trainer.devices` ran for minutes past 2.4 GB."""
    from stride.config import load_config
    from stride.tuning.spec import load_search

    path = tmp_path / "bomb.yaml"
    head = "name: bomb\ndata: {path: x}\nmodel: {architecture: lenet5}\ntrainer:\n" if kind == "recipe" else \
        "base: digits-cnn\nspace: {optim.lr: {choice: [0.1]}}\noverrides:\n"
    path.write_text(head + "  devices:\n" + textwrap.indent(alias_bomb(8), "    "))
    load = load_config if kind == "recipe" else load_search
    seconds, peak = refused_cheaply(lambda: load(str(path)),
                                    r"bomb.yaml: refused: more than 100,000 values once its aliases are expanded")
    assert seconds < 1 and peak < 16 << 20


@pytest.mark.parametrize("text, message", [
    ("a: " + "[" * 5000 + "]" * 5000, "nested deeper than 64 levels"),
    ("a: " + "{b: " * 5000 + "1" + "}" * 5000, "nested deeper than 64 levels"),
    ("".join(f"l{i}: &l{i} [{'[' * 20}{f'*l{i - 1}' if i else 0}{']' * 20}]\n" for i in range(5)),
     "nested deeper than 64 levels once its aliases are expanded"),
    ("a: &a [1, *a]", r"the alias \*a refers to a node that contains it"),
])
def test_deep_or_recursive_yaml_is_a_clear_error(tmp_path, text, message):
    from stride.config import load_config

    path = tmp_path / "deep.yaml"
    path.write_text(text)
    seconds, _ = refused_cheaply(lambda: load_config(str(path)), rf"deep.yaml: refused: {message}")
    assert seconds < 5


def test_deep_json_in_annotations_and_manifests_is_a_clear_error(tmp_path):
    from stride.datamodules.sources.coco_captions import prepare_coco_captions

    deep = "[" * 100_000 + "]" * 100_000
    source = tmp_path / "coco"
    for folder in ("train2017", "val2017", "annotations"):
        (source / folder).mkdir(parents=True)
    for split in ("train", "val"):
        (source / "annotations" / f"captions_{split}2017.json").write_text(f'{{"images": {deep}}}')
    with pytest.raises(StrideError, match=r"captions_train2017.json: refused: nested too deeply to read"):
        prepare_coco_captions(source, tmp_path / "out")
    dataset = tiny_dataset(tmp_path / "data", ["x"])
    manifest = (dataset / "manifest.json").read_text()
    (dataset / "manifest.json").write_text(manifest.replace('"source": {', f'"source": {{"deep": {deep}, ', 1))
    with pytest.raises(StrideError, match=r"data/manifest.json: refused: nested too deeply to read"):
        read_manifest(dataset)


# -- decompression bombs in sources: the header's sizes bound what is inflated -------------------------------

def zeros_gz(megabytes: int) -> bytes:
    """A gzip stream of `megabytes` MiB of zeros, in about 1 KB per MiB (gzip members may be concatenated)."""
    return gzip.compress(bytes(1 << 20), 9) * megabytes


def test_an_idx_gz_inflating_past_its_header_is_refused_after_reading_what_the_header_declares(tmp_path):
    """A 300 KB file inflating to 300 MB behind a header of 2 images: before, all 300 MB were read."""
    from stride.datamodules.sources.mnist_idx import IMAGES_MAGIC, read_idx

    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">IIII", IMAGES_MAGIC, 2, 28, 28)) + zeros_gz(300))
    _, peak = refused_cheaply(lambda: read_idx(path, IMAGES_MAGIC),
                              r"train-images-idx3-ubyte.gz: truncated or padded: header says 2 x 28 x 28 = 1,568 "
                              r"bytes of data, found more")
    assert peak < 4 << 20


def test_absurd_idx_dimensions_are_multiplied_right_and_refused_from_the_header(tmp_path):
    from stride.datamodules.sources.mnist_idx import IMAGES_MAGIC, read_idx

    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">IIII", IMAGES_MAGIC, *[2**32 - 1] * 3))
    product = f"{(2**32 - 1) ** 3:,}"
    with pytest.raises(StrideError, match=rf"decoding the header's 4294967295 x 4294967295 x 4294967295 = {product} "
                                          r"bytes of data needs .* MiB of memory, more than the budget"):
        read_idx(path, IMAGES_MAGIC)
    path.write_bytes(struct.pack(">IIII", IMAGES_MAGIC, 1000, 28, 28))
    with pytest.raises(StrideError, match=r"more than the budget of 0.5 MiB"):
        read_idx(path, IMAGES_MAGIC, budget_bytes=1 << 19)


def test_a_folder_named_like_an_idx_file_is_called_a_folder(tmp_path):
    from idx_files import write_mnist_folder

    from stride.datamodules.sources.mnist_idx import prepare_mnist_like

    write_mnist_folder(tmp_path / "raw", train=20, test=10)
    (tmp_path / "raw" / "t10k-images-idx3-ubyte.gz").unlink()
    (tmp_path / "raw" / "t10k-images-idx3-ubyte").mkdir()
    with pytest.raises(StrideError, match=r"raw/t10k-images-idx3-ubyte: is a folder or special file, not the IDX file"):
        prepare_mnist_like("mnist", tmp_path / "raw", tmp_path / "out", val_size=5)


def tar_gz_bomb(path: Path, member: str, megabytes: int) -> Path:
    """A .tar.gz of one member of `megabytes` MiB of zeros, in about 1 KB per MiB."""
    info = tarfile.TarInfo(member)
    info.size = megabytes << 20
    path.write_bytes(gzip.compress(info.tobuf(tarfile.USTAR_FORMAT)) + zeros_gz(megabytes) + gzip.compress(bytes(1024)))
    return path


@pytest.mark.parametrize("member, message", [
    ("cifar-10-batches-py/data_batch_1", r"member 'cifar-10-batches-py/data_batch_1' holds 314,572,800 bytes, more "
                                         r"than any file of this dataset"),
    ("cifar-10-batches-py/unwanted", r"its members up to 'cifar-10-batches-py/unwanted' hold 314,572,800 bytes, "
                                     r"more than the whole dataset"),
])
def test_a_cifar_archive_inflating_to_more_than_the_dataset_is_refused_from_its_headers(tmp_path, member, message):
    """300 KB inflating to 300 MB: before, a wanted member was read into memory whole, and an unwanted one inflated."""
    from stride.datamodules.sources.cifar import prepare_cifar

    archive = tar_gz_bomb(tmp_path / "cifar-10-python.tar.gz", member, 300)
    seconds, peak = refused_cheaply(lambda: prepare_cifar("cifar10", archive, tmp_path / "out"), message)
    assert peak < 4 << 20 and seconds < 2


def test_an_svhn_file_decoding_past_the_memory_budget_is_refused_from_its_headers(tmp_path):
    """60 KB holding 20,000 images; the official extra file decodes to 1.6 GB, a forged one to anything."""
    from scipy.io import savemat

    from stride.datamodules.sources.svhn import read_mat

    path = tmp_path / "train_32x32.mat"
    savemat(path, {"X": np.zeros((32, 32, 3, 20_000), np.uint8), "y": np.ones((20_000, 1), np.uint8)},
            do_compression=True)
    assert path.stat().st_size < 100_000
    seconds, peak = refused_cheaply(lambda: read_mat(path, budget_bytes=16 << 20),
                                    r"train_32x32.mat: decoding X 32 x 32 x 3 x 20000, y 20000 x 1 needs 58.6 MiB of "
                                    r"memory, more than the budget of 16.0 MiB \(half the memory free now\)")
    assert peak < 1 << 20 and seconds < 1
    images, labels = read_mat(path, budget_bytes=64 << 20)
    assert images.shape == (20_000, 3, 32, 32) and (labels == 1).all()


# -- image files: Pillow opens only the formats each reader expects -----------------------------------------

def encoded(image_format: str, size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["EPS", "TIFF", "WEBP"])
@pytest.mark.parametrize("member", ["png", "jpg"])
def test_a_shard_image_member_holding_another_format_is_not_decoded(image_format, member):
    """Before, TIFF and WebP members decoded as if they were PNG or JPEG, and EPS went looking for Ghostscript."""
    from stride.datamodules.streaming import decode_member

    with pytest.raises(UnidentifiedImageError) as raised:
        decode_member(member, encoded(image_format))
    assert "Ghostscript" not in str(raised.value)


@pytest.mark.parametrize("image_format", ["EPS", "TIFF", "WEBP"])
def test_source_images_in_other_formats_are_not_jpegs(tmp_path, image_format):
    """COCO left out (and counts) such a file; WIDER FACE refuses it. Before, COCO re-encoded TIFF and WebP."""
    from stride.datamodules.sources.coco_captions import prepare_coco_captions

    source = tmp_path / "coco"
    files = {"train2017": [encoded("JPEG")] * 3 + [encoded(image_format)], "val2017": [encoded("JPEG")]}
    (source / "annotations").mkdir(parents=True)
    for folder, payloads in files.items():
        (source / folder).mkdir()
        images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 8, "height": 6} for i in range(len(payloads))]
        for image, payload in zip(images, payloads):
            (source / folder / image["file_name"]).write_bytes(payload)
        captions = [{"id": i, "image_id": i, "caption": "a blue picture"} for i in range(len(payloads))]
        (source / "annotations" / f"captions_{folder}.json").write_text(
            json.dumps({"images": images, "annotations": captions}))
    manifest = prepare_coco_captions(source, tmp_path / "out", val_size=1, min_count=1)
    assert manifest.skipped_samples == {"not a JPEG or PNG image": 1}
    assert manifest.source["re_encoded_images"] == 0

    from stride.datamodules.sources.wider_face import read_wider_image

    class Folder:
        root = tmp_path

        def read(self, relative: str) -> bytes:
            return encoded(image_format)

        def where(self, relative: str) -> str:
            return f"{self.root}/{relative}"

    with pytest.raises(StrideError, match=r"face.jpg: not a JPEG image \(its content is none of these formats"):
        read_wider_image(Folder(), "face.jpg", with_sums=False)


def test_every_image_open_in_the_data_layers_names_its_formats():
    """`Image.open` without `formats=` tries every plugin Pillow has (stride/tasks' input readers are checked
    with their inputs)."""
    import ast

    import stride

    root = Path(stride.__file__).resolve().parents[1]
    folders = [root / "datamodules", *(p for p in (root / "stride").iterdir() if p.is_dir() and not p.is_symlink()
                                       and p.name != "tasks")]
    files = [*(root / "stride").glob("*.py"), *(f for folder in folders for f in folder.rglob("*.py"))]
    unrestricted = [f"{path.relative_to(root)}:{node.lineno}" for path in files
                    for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Call) and ast.unparse(node.func) == "Image.open"
                    and "formats" not in {keyword.arg for keyword in node.keywords}]
    assert len(files) > 40 and not unrestricted
