"""CIFAR-10/100 (Python and binary versions, folders, .tar.gz) and SVHN .mat files into shards; every defect named."""

import io
import os
import pickle
import subprocess
import tarfile

import numpy as np
import pytest
from cifar_files import (
    CIFAR10_NAMES,
    COARSE_NAMES,
    FINE_NAMES,
    gradient_image,
    python2_pickle,
    read_split,
    tar_gz,
    write_cifar,
    write_svhn_mat,
)

from stride.datamodules.manifest import verify_shards
from stride.datamodules.safe_pickle import load_data_pickle
from stride.datamodules.sources.cifar import prepare_cifar
from stride.datamodules.sources.svhn import prepare_svhn
from stride.errors import StrideError

ARCHIVES = {("cifar10", "python"): "cifar-10-python.tar.gz", ("cifar10", "binary"): "cifar-10-binary.tar.gz",
            ("cifar100", "python"): "cifar-100-python.tar.gz", ("cifar100", "binary"): "cifar-100-binary.tar.gz"}


def packaged(tmp_path, dataset, version, packaging, **sizes):
    """Official files under tmp_path/raw as a folder, an archive, or an archive inside a folder."""
    arrays = write_cifar(tmp_path / "raw", dataset, version, **sizes)
    if packaging == "folder":
        return tmp_path / "raw", arrays
    archive = tar_gz(arrays["folder"], tmp_path / ARCHIVES[(dataset, version)])
    if packaging == "archive":
        return archive, arrays
    (tmp_path / "in").mkdir()
    return archive.rename(tmp_path / "in" / archive.name).parent, arrays


def assert_gradient_image(image_chw):
    """Red grows down the rows, green along the columns: channel order and orientation both right."""
    np.testing.assert_array_equal(image_chw, gradient_image())
    assert tuple(image_chw[:, 31, 0]) == (248, 0, 77) and tuple(image_chw[:, 0, 31]) == (0, 248, 77)


@pytest.mark.parametrize("dataset, version, packaging", [
    ("cifar10", "python", "folder"), ("cifar10", "binary", "folder"), ("cifar10", "python", "archive"),
    ("cifar10", "binary", "archive-in-folder"), ("cifar100", "python", "archive"), ("cifar100", "binary", "folder")])
def test_cifar_round_trip_is_exact(tmp_path, dataset, version, packaging):
    source, arrays = packaged(tmp_path, dataset, version, packaging)
    manifest = prepare_cifar(dataset, source, tmp_path / "out", val_size=10, samples_per_shard=32)
    verify_shards(tmp_path / "out", manifest)
    train_count = len(arrays["train_images"])
    assert {k: v.num_samples for k, v in manifest.splits.items()} == {"train": train_count - 10, "val": 10, "test": 20}
    assert manifest.class_names == (CIFAR10_NAMES if dataset == "cifar10" else FINE_NAMES)
    assert manifest.sample_schema["png"]["shape"] == [3, 32, 32] and manifest.source["kind"] == f"cifar-{version}"

    label_set = "label" if dataset == "cifar10" else "fine"
    test_images, test_labels = read_split(tmp_path / "out", "test")
    np.testing.assert_array_equal(test_images, arrays["test_images"])
    np.testing.assert_array_equal(test_labels, arrays["test_labels"][label_set])
    assert_gradient_image(test_images[0])
    pairs = lambda images, labels: {(image.tobytes(), int(label)) for image, label in zip(images, labels)}  # noqa: E731
    official = pairs(arrays["train_images"], arrays["train_labels"][label_set])
    assert pairs(*read_split(tmp_path / "out", "train")) | pairs(*read_split(tmp_path / "out", "val")) == official


def test_cifar100_label_sets_and_superclasses(tmp_path):
    source, arrays = packaged(tmp_path, "cifar100", "python", "folder", per_batch=200)
    fine = prepare_cifar("cifar100", source, tmp_path / "fine", val_size=20)
    assert fine.source["coarse_label_names"] == COARSE_NAMES
    assert fine.source["coarse_of_fine"] == [f // 5 for f in range(100)]  # the fixture's fixed superclasses
    coarse = prepare_cifar("cifar100", source, tmp_path / "coarse", label_set="coarse", val_size=20)
    assert coarse.class_names == COARSE_NAMES and coarse.sample_schema["cls"]["num_classes"] == 20
    np.testing.assert_array_equal(read_split(tmp_path / "coarse", "test")[1], arrays["test_labels"]["coarse"])
    with pytest.raises(StrideError, match=r"--label-set coarse: not a label set of CIFAR-10 \(it has: label\)"):
        prepare_cifar("cifar10", source, tmp_path / "x", label_set="coarse")


def test_validation_split_is_deterministic(tmp_path):
    source, _ = packaged(tmp_path, "cifar10", "binary", "folder")
    first, again, other = (prepare_cifar("cifar10", source, tmp_path / name, val_size=10, seed=seed)
                           for name, seed in (("a", 4), ("b", 4), ("c", 5)))
    assert first.split("val").shards[0].sha256 == again.split("val").shards[0].sha256
    assert first.split("val").shards[0].sha256 != other.split("val").shards[0].sha256


class RunsCode:
    """A pickle that would run `call(*args)` while loading."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


# named as pickled: protocol 2 writes Python 2's module names (builtins -> __builtin__, subprocess -> commands)
@pytest.mark.parametrize("call, named", [(os.system, rf"{os.system.__module__}\.system"),
                                          (eval, r"(__builtin__|builtins)\.eval"),
                                          (subprocess.check_call, r"(subprocess|commands)\.check_call")],
                         ids=["os.system", "eval", "subprocess"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path, call, named):
    source, arrays = packaged(tmp_path, "cifar10", "python", "folder")
    marker = tmp_path / "ran"
    command = f"open({str(marker)!r}, 'w')" if call is eval else (f"touch {marker}" if call is os.system
                                                                  else ["touch", str(marker)])
    batch = {b"labels": [0] * 20, b"data": arrays["train_images"][:20].reshape(20, 3072), b"x": RunsCode(call, command)}
    (arrays["folder"] / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(StrideError, match=rf"data_batch_3: refusing to unpickle the global {named}"):
        prepare_cifar("cifar10", source, tmp_path / "out", val_size=10)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_the_unpickler_admits_python3_bytes_only_as_latin1():
    data = np.arange(6, dtype=np.uint8).reshape(2, 3)
    loaded = load_data_pickle(pickle.dumps({b"data": data, b"name": b"\xff"}, protocol=2), "batch")
    np.testing.assert_array_equal(loaded[b"data"], data)
    assert loaded[b"name"] == b"\xff"
    payload = pickle.dumps(RunsCode(__import__("_codecs").encode, "eA==", "base64"), protocol=2)
    with pytest.raises(StrideError, match="batch: refusing to unpickle the global _codecs.encode with encoding 'base"):
        load_data_pickle(payload, "batch")


def rewrite_batch(folder, name, **changes):
    batch = load_data_pickle((folder / name).read_bytes(), str(folder / name))
    for key, value in changes.items():
        if value is None:
            del batch[key.encode()]
        else:
            batch[key.encode()] = value
    (folder / name).write_bytes(python2_pickle(batch))


PYTHON_DEFECTS = {
    "missing batch": (lambda f: (f / "data_batch_4").unlink(),
                      r"data_batch_4: missing; the CIFAR-10 python version has data_batch_1"),
    "truncated batch": (lambda f: (f / "data_batch_2").write_bytes((f / "data_batch_2").read_bytes()[:-500]),
                        r"data_batch_2: not a complete pickle"),
    "wrong keys": (lambda f: rewrite_batch(f, "data_batch_1", labels=None),
                   r"data_batch_1: missing key\(s\) labels; a batch holds data, labels"),
    "labels out of range": (lambda f: rewrite_batch(f, "test_batch", labels=[10] * 20),
                            r"test_batch: labels value 10 out of range 0..9"),
    "fewer labels than rows": (lambda f: rewrite_batch(f, "data_batch_5", labels=[1] * 19),
                               r"data_batch_5: 'labels' must be a list of 20 integer labels"),
    "rows of the wrong length": (lambda f: rewrite_batch(f, "data_batch_5", data=np.zeros((20, 1024), np.uint8)),
                                 r"data_batch_5: 'data' is a uint8 array of shape \(20, 1024\); expected a uint8 "
                                 r"array N x 3072"),
    "nine class names": (lambda f: (f / "batches.meta").write_bytes(python2_pickle({b"label_names": [b"a"] * 9})),
                         r"batches.meta \(label_names\): 9 class names, expected 10"),
}


@pytest.mark.parametrize("defect", PYTHON_DEFECTS)
def test_python_version_defects_are_named(tmp_path, defect):
    source, arrays = packaged(tmp_path, "cifar10", "python", "folder")
    damage, message = PYTHON_DEFECTS[defect]
    damage(arrays["folder"])
    with pytest.raises(StrideError, match=message):
        prepare_cifar("cifar10", source, tmp_path / "out", val_size=10)
    assert not (tmp_path / "out").exists()


def test_binary_version_defects_are_named(tmp_path):
    source, arrays = packaged(tmp_path, "cifar100", "binary", "folder")
    train = arrays["folder"] / "train.bin"
    records = train.read_bytes()
    train.write_bytes(records[:-1])
    with pytest.raises(StrideError, match=r"train.bin: 61479 bytes is not a whole number of 3074-byte records "
                                          r"\(2 label byte\(s\) \+ 3072 pixel bytes\); truncated\?"):
        prepare_cifar("cifar100", source, tmp_path / "out", val_size=10)
    train.write_bytes(bytes([20]) + records[1:])  # coarse labels are 0..19
    with pytest.raises(StrideError, match=r"train.bin: coarse label byte value 20 out of range 0..19"):
        prepare_cifar("cifar100", source, tmp_path / "out", val_size=10)
    assert not (tmp_path / "out").exists()


def test_wrong_layout_is_named(tmp_path):
    source, _ = packaged(tmp_path, "cifar100", "python", "archive")
    with pytest.raises(StrideError, match=r"cifar-100-python.tar.gz: no CIFAR-10 files found; it holds CIFAR-100, a "
                                          r"different dataset; expected cifar-10-batches-py/ with data_batch_1"):
        prepare_cifar("cifar10", source, tmp_path / "out")
    with pytest.raises(StrideError, match=r"nowhere is neither a folder nor a .tar.gz archive"):
        prepare_cifar("cifar10", tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def add_member(archive, info, payload=b""):
    """A copy of the archive with one more member (a crafted one)."""
    with tarfile.open(archive) as original, tarfile.open(archive.with_name("crafted.tar.gz"), "w:gz") as crafted:
        for member in original:
            crafted.addfile(member, original.extractfile(member) if member.isfile() else None)
        crafted.addfile(info, io.BytesIO(payload))
    return archive.with_name("crafted.tar.gz")


def member(name, kind=tarfile.REGTYPE, size=0, target=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, target
    return info


@pytest.mark.parametrize("crafted, message", [
    (member("../escaped.txt", size=3), r"member '../escaped.txt' would land outside the target folder"),
    (member("/tmp/absolute.txt", size=3), r"member '/tmp/absolute.txt' would land outside the target folder"),
    (member("cifar-10-batches-py/link", tarfile.SYMTYPE, target="/etc/passwd"), r"member '.*link' is a link"),
    (member("cifar-10-batches-py/dev", tarfile.CHRTYPE), r"member '.*dev' is a device or fifo")],
    ids=["dot-dot", "absolute", "symlink", "device"])
def test_archive_members_that_could_escape_are_refused(tmp_path, crafted, message):
    source, _ = packaged(tmp_path, "cifar10", "python", "archive")
    archive = add_member(source, crafted, b"bad" if crafted.size else b"")
    with pytest.raises(StrideError, match=rf"crafted.tar.gz: {message}"):
        prepare_cifar("cifar10", archive, tmp_path / "out", val_size=10)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out").exists()


def test_truncated_archive_is_named(tmp_path):
    archive, _ = packaged(tmp_path, "cifar10", "binary", "archive")
    archive.write_bytes(archive.read_bytes()[:-2000])
    with pytest.raises(StrideError, match=r"cifar-10-binary.tar.gz: cannot read the archive"):
        prepare_cifar("cifar10", archive, tmp_path / "out", val_size=10)


def write_svhn(folder, extra=True):
    """Official SVHN files: 30 training, 12 test, 8 extra images; label 10 is the digit 0."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    written = {}
    for split, count in {"train": 30, "test": 12, **({"extra": 8} if extra else {})}.items():
        images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        images[0] = gradient_image()
        labels = rng.integers(1, 11, count)
        labels[:2] = 10
        write_svhn_mat(folder / f"{split}_32x32.mat", images, labels)
        written[split] = (images, labels)
    return written


def test_svhn_round_trip_label_10_is_0_and_extra_joins_training(tmp_path):
    written = write_svhn(tmp_path / "raw")
    manifest = prepare_svhn(tmp_path / "raw", tmp_path / "out", val_size=6)
    assert {k: v.num_samples for k, v in manifest.splits.items()} == {"train": 24, "val": 6, "test": 12}
    test_images, test_labels = read_split(tmp_path / "out", "test")
    np.testing.assert_array_equal(test_images, written["test"][0])
    np.testing.assert_array_equal(test_labels, written["test"][1] % 10)
    assert test_labels[0] == 0 and manifest.class_names[0] == "0"
    assert_gradient_image(test_images[0])  # X is height x width x channel x image

    with_extra = prepare_svhn(tmp_path / "raw", tmp_path / "extra", val_size=6, extra=True)
    assert {k: v.num_samples for k, v in with_extra.splits.items()} == {"train": 32, "val": 6, "test": 12}
    val = {image.tobytes() for image in read_split(tmp_path / "extra", "val")[0]}
    assert val <= {image.tobytes() for image in written["train"][0]}  # validation only from the training file
    assert with_extra.split("val").shards[0].sha256 == manifest.split("val").shards[0].sha256


def mat_defect(name, images=None, labels=None, **variables):
    """Replace one file with four images, the given arrays or variables in place of good ones."""
    def damage(folder):
        write_svhn_mat(folder / name, np.zeros((4, 3, 32, 32), np.uint8) if images is None else images,
                       np.ones(4) if labels is None else labels, **variables)
    return damage


SVHN_DEFECTS = {
    "missing file": (lambda f: (f / "test_32x32.mat").unlink(), r"test_32x32.mat: missing; expected the official"),
    "truncated file": (lambda f: (f / "train_32x32.mat").write_bytes((f / "train_32x32.mat").read_bytes()[:5000]),
                       r"train_32x32.mat: cannot read as a MATLAB v5 file"),
    "unexpected key": (mat_defect("train_32x32.mat", Z=np.zeros(2)),
                       r"train_32x32.mat: holds the variables X, Z, y; expected exactly the variables X"),
    "wrong shape": (mat_defect("test_32x32.mat", images=np.zeros((4, 3, 28, 28), np.uint8)),
                    r"test_32x32.mat: X is uint8 of shape \(28, 28, 3, 4\)"),
    "label 0": (mat_defect("train_32x32.mat", labels=np.array([1, 0, 2, 3])),
                r"train_32x32.mat: label 0 out of range 1..10"),
    "label 11": (mat_defect("test_32x32.mat", labels=np.array([11, 1, 2, 3])),
                 r"test_32x32.mat: label 11 out of range 1..10"),
}


@pytest.mark.parametrize("defect", SVHN_DEFECTS)
def test_svhn_defects_are_named(tmp_path, defect):
    write_svhn(tmp_path / "raw", extra=False)
    damage, message = SVHN_DEFECTS[defect]
    damage(tmp_path / "raw")
    with pytest.raises(StrideError, match=message):
        prepare_svhn(tmp_path / "raw", tmp_path / "out", val_size=2)
    assert not (tmp_path / "out").exists()


def test_cli_prepares_an_archive_and_names_bad_options(tmp_path, capsys):
    from stride.pipelines.cli import main

    archive, _ = packaged(tmp_path, "cifar10", "python", "archive")
    assert main(["data", "prepare", "cifar10", "--source", str(archive), "--out", str(tmp_path / "out"),
                 "--val-size", "10"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["data", "prepare", "cifar10", "--source", str(archive), "--out", str(tmp_path / "o2"),
                 "--label-set", "coarse"]) == 2
    assert "--label-set is for cifar100" in capsys.readouterr().err
    assert main(["data", "prepare", "svhn", "--out", str(tmp_path / "o3")]) == 2
    assert "svhn needs --source DIR" in capsys.readouterr().err
