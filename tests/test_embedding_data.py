"""Embedding datasets (docs/embedding.md): the official LFW layout, identity folders, the held-out digits, and P x K
training batches that keep DDP slots' samples disjoint."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stride.config import load_config
from stride.datamodules.embedding import EmbeddingData, IdentityBatchStream, generate_pairs, write_embedding_dataset
from stride.datamodules.manifest import read_manifest
from stride.datamodules.sources.held_out_digits import prepare_held_out_digits
from stride.datamodules.sources.identity_folders import prepare_identity_folders
from stride.datamodules.sources.lfw import parse_pairs, prepare_lfw
from stride.datamodules.streaming import ShardStream
from stride.errors import StrideError
from stride.tasks import get_task
from tests.lfw_files import MATCHED, MISMATCHED, PAIRED, UNPAIRED, pairs_text, write_lfw


def split_labels(data: EmbeddingData, split: str) -> list[int]:
    """Every sample's identity in `split`, read once (the training loader would make P x K batches)."""
    once = ShardStream(data.root, data.manifest.split(split).shards, data.fields, data.collate, batch_size=64,
                       training=False)
    return [int(label) for _, labels, _ in once for label in labels]


# -- LFW ---------------------------------------------------------------------------------------------------------
def official_pairs(dataset: Path) -> list[tuple[int, str, str, bool]]:
    """The test split's pairs as (fold, image, image, same), images named as LFW names them (the test split holds
    the images pairs.txt names, in sorted order)."""
    pairs = EmbeddingData(dataset, batch_size=4).verification_pairs("test")
    name = sorted({image for _, a, b, _ in expected_pairs() for image in (a, b)})
    return [(int(f), name[a], name[b], bool(s)) for f, a, b, s in zip(pairs.fold, pairs.first, pairs.second,
                                                                         pairs.same)]


def expected_pairs() -> list[tuple[int, str, str, bool]]:
    expected = []
    for fold, (matched, mismatched) in enumerate(zip(MATCHED, MISMATCHED)):
        expected += [(fold, f"{p}_{a:04d}", f"{p}_{b:04d}", True) for p, a, b in matched]
        expected += [(fold, f"{p}_{a:04d}", f"{q}_{b:04d}", False) for p, a, q, b in mismatched]
    return expected


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "lfw.tgz"])
def test_lfw_official_layout_becomes_a_test_split_with_the_published_pairs(tmp_path, archive):
    source = write_lfw(tmp_path / "raw", archive=archive)
    manifest = prepare_lfw(source, tmp_path / "lfw", size_px=32)
    assert manifest.task == "embedding" and manifest.sample_schema["png"]["shape"] == [3, 32, 32]
    assert official_pairs(tmp_path / "lfw") == expected_pairs()  # folds, order and identities as published
    assert manifest.annotations["verification_pairs"]["test"]["folds"] == 2
    people = manifest.class_names
    assert people == sorted({**PAIRED, **UNPAIRED})
    # nobody pairs.txt names is trained or validated on; everyone else is
    data = EmbeddingData(tmp_path / "lfw", batch_size=4)
    seen = {split: {people[label] for label in split_labels(data, split)} for split in ("train", "val", "test")}
    assert seen["test"] == set(PAIRED)
    assert seen["train"] | seen["val"] == set(UNPAIRED) and not seen["train"] & seen["val"]
    assert len(seen["val"]) == 2 and data.verification_pairs("val").fold.max() == 1  # pairs.txt's structure


def test_a_folder_and_its_tarball_give_the_same_dataset(tmp_path):
    a = prepare_lfw(write_lfw(tmp_path / "a"), tmp_path / "from-folder", size_px=16)
    b = prepare_lfw(write_lfw(tmp_path / "b", archive=True) / "lfw.tgz", tmp_path / "from-tgz", size_px=16)
    assert a.annotations == b.annotations and [s.sha256 for s in a.splits["test"].shards] == \
        [s.sha256 for s in b.splits["test"].shards]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda lines: ["10 300", *lines[1:]], "announces 10 folds x 300"),
    (lambda lines: [lines[0], lines[1] + "\t7", *lines[2:]], "line 2: a matched pair is 'name n1 n2'"),
    (lambda lines: [*lines[:4], "Ann_Archer\t1\tBob_Brown", *lines[5:]], "line 5: a mismatched pair"),
    (lambda lines: [lines[0], "Ann_Archer\tone\t2", *lines[2:]], "line 2: 'one' is not an image number"),
    (lambda lines: ["ten"], "line 1: expected 'FOLDS PAIRS_PER_CLASS'"),
])
def test_a_malformed_pairs_txt_names_the_file_and_line(tmp_path, edit, message):
    source = write_lfw(tmp_path / "raw")
    (source / "pairs.txt").write_text("\n".join(edit(pairs_text().splitlines())) + "\n")
    with pytest.raises(StrideError, match="pairs.txt") as error:
        prepare_lfw(source, tmp_path / "lfw", size_px=16)
    assert message in str(error.value) and str(source / "pairs.txt") in str(error.value)
    assert not (tmp_path / "lfw").exists()


def test_a_pair_naming_a_missing_image_names_the_line(tmp_path):
    source = write_lfw(tmp_path / "raw")
    (source / "lfw" / "Cy_Chen" / "Cy_Chen_0002.jpg").unlink()
    with pytest.raises(StrideError, match=r"pairs.txt, line 8: names Cy_Chen/Cy_Chen_0002.jpg"):
        prepare_lfw(source, tmp_path / "lfw", size_px=16)


def test_parse_pairs_reads_the_official_format():
    pairs = parse_pairs(pairs_text(), "pairs.txt")
    assert len(pairs) == 12 and pairs[0].first == ("Ann_Archer", 1) and pairs[0].same
    assert pairs[3].second == ("Dee_Dao", 1) and not pairs[3].same and pairs[6].fold == 1 and pairs[6].line == 8


def test_an_lfw_tarball_with_a_member_outside_its_folder_is_refused(tmp_path):
    source = write_lfw(tmp_path / "raw", archive=True)
    with tarfile.open(source / "lfw.tgz", "w:gz") as tar:
        info = tarfile.TarInfo("../escape/Ann_Archer/Ann_Archer_0001.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(StrideError, match="outside the target folder"):
        prepare_lfw(source, tmp_path / "lfw")


# -- identity folders and the held-out digits ----------------------------------------------------------------------
def test_identity_folders_split_identities_not_images(tmp_path):
    rng = np.random.default_rng(0)
    for person in range(12):
        folder = tmp_path / "faces" / f"person-{person:02d}"
        folder.mkdir(parents=True)
        for image in range(4):
            pixels = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{image}.{'png' if image % 2 else 'jpg'}")
    manifest = prepare_identity_folders(tmp_path / "faces", tmp_path / "shards", size_px=24, val_fraction=0.2,
                                        test_fraction=0.2)
    assert manifest.sample_schema["png"]["shape"] == [3, 24, 24]
    data = EmbeddingData(tmp_path / "shards", batch_size=4)
    owners = {split: set(split_labels(data, split)) for split in ("train", "val", "test")}
    assert len(owners["val"]) == len(owners["test"]) == 2 and len(owners["train"]) == 8
    assert not (owners["train"] & owners["val"] or owners["train"] & owners["test"] or owners["val"] & owners["test"])
    pairs = data.verification_pairs("test")
    assert sorted(set(pairs.fold.tolist())) == list(range(10)) and pairs.same.sum() == (~pairs.same).sum()


def test_held_out_digits_train_on_0_to_6_and_verify_on_unseen_7_to_9(tmp_path):
    manifest = prepare_held_out_digits(tmp_path / "digits", size_px=8)
    data = EmbeddingData(tmp_path / "digits", batch_size=4)
    digits = {split: set(split_labels(data, split)) for split in ("train", "val", "test")}
    assert digits == {"train": set(range(7)), "val": {7, 8, 9}, "test": {7, 8, 9}}
    pairs = data.verification_pairs("val")
    assert len(pairs) == 1000 and sorted(set(pairs.fold.tolist())) == list(range(10))
    assert manifest == read_manifest(tmp_path / "digits")  # and the pairs are covered by the manifest's sha256


def test_generated_pairs_are_distinct_deterministic_and_labelled_right():
    labels = np.repeat(np.arange(5), 6)
    pairs = generate_pairs(labels, pairs_per_fold=7, seed=3)
    assert pairs == generate_pairs(labels, pairs_per_fold=7, seed=3)
    assert len(pairs) == 140 and len({(a, b) for _, a, b, _ in pairs}) == 140
    assert all((labels[a] == labels[b]) == same and a < b for _, a, b, same in pairs)
    with pytest.raises(StrideError, match="cannot make 10 folds"):
        generate_pairs(np.array([0, 1, 2]), pairs_per_fold=3, seed=0)


# -- P x K batches -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def identities(tmp_path_factory) -> Path:
    """12 identities x 10 tiny images, in 6 shards."""
    out = tmp_path_factory.mktemp("pk") / "data"
    labels = {"train": np.repeat(np.arange(12), 10), "val": np.repeat([0, 1], 3), "test": np.repeat([0, 1], 3)}
    pixels = np.random.default_rng(0).integers(0, 256, (120, 1, 4, 4), dtype=np.uint8)
    pairs = {s: generate_pairs(labels[s], pairs_per_fold=1, seed=0, folds=2) for s in ("val", "test")}
    write_embedding_dataset(out, dataset="pk", identities=[str(i) for i in range(12)], labels=labels, pairs=pairs,
                            pair_origin={}, images=[*(("train", p) for p in pixels), *(("val", p) for p in pixels[:6]),
                                                    *(("test", p) for p in pixels[:6])],
                            source={}, parameters={}, samples_per_shard=20)
    return out


def stream(root: Path, rank: int, world: int, per_identity: int = 5, batch: int = 10) -> IdentityBatchStream:
    data = EmbeddingData(root, batch_size=batch, images_per_identity=per_identity)
    return IdentityBatchStream(data.root, data.manifest.split("train").shards, data.fields, data.collate,
                               batch_size=batch, training=True, rank=rank, world_size=world, seed=1,
                               shuffle_buffer=30, images_per_identity=per_identity)


def test_training_batches_hold_p_identities_of_k_images(identities):
    batches = list(stream(identities, 0, 1))
    assert len(batches) == 12  # 120 samples / batches of 10
    for _, labels, indices in batches:
        counts = np.unique(labels.numpy(), return_counts=True)[1]
        assert counts.tolist() == [5, 5] and len(set(indices.tolist())) == 10


def test_ranks_draw_their_batches_from_disjoint_samples(identities):
    seen = []
    for rank in range(2):
        epoch = stream(identities, rank, 2, per_identity=2, batch=4)
        seen.append({int(i) for _, _, indices in epoch for i in indices})
    assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_impossible_batches_are_an_error_not_a_hang(identities):
    with pytest.raises(StrideError, match="without 2 identities of 11 images"):
        next(iter(stream(identities, 0, 1, per_identity=11, batch=22)))  # each identity has 10 images
    with pytest.raises(StrideError, match="multiple of data.images_per_identity"):
        stream(identities, 0, 1, per_identity=3, batch=10)


def test_embedding_data_refuses_a_cache(identities):
    config = load_config("digits-embedding-triplet", [f"data.path={identities}", "data.cache=memory"])
    with pytest.raises(StrideError, match="data.cache=memory: embedding batches"):
        get_task("embedding").datamodule(config)
