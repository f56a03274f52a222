"""Captioning data: vocabulary rules, COCO (official and Karpathy layouts) to shards, shapes-captions, batches."""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from stride.datamodules.captioning import CaptioningData, caption_choice
from stride.datamodules.manifest import read_manifest, verify_shards
from stride.datamodules.sources.coco_captions import constant_caption, prepare_coco_captions
from stride.datamodules.sources.shapes_captions import COLOURS, KINDS, prepare_shapes_captions, write_shapes_coco
from stride.datamodules.streaming import decode_member, iter_shard
from stride.datamodules.vocabulary import Vocabulary, tokenize
from stride.datamodules.writer import ShardWriter
from stride.errors import StrideError

# -- the vocabulary ------------------------------------------------------------------------------

def test_tokenize_lowercases_and_splits_on_everything_but_letters_and_digits():
    assert tokenize("A man's HAT, on 2 dogs!\n") == ["a", "man", "s", "hat", "on", "2", "dogs"]
    assert tokenize(" ... ") == []


def test_vocabulary_keeps_words_seen_more_than_min_count_times_ordered_by_count():
    captions = ["cat dog"] * 6 + ["Cat."] * 2 + ["bird"] * 5 + ["ant ant"] * 3 + ["zebra"] * 6
    vocabulary = Vocabulary.build(captions, min_count=5)
    # cat 8, then the ties at 6 alphabetically; bird (exactly 5 times) is out
    assert vocabulary.words == ["<EOS>", "<UKN>", "cat", "ant", "dog", "zebra"]
    assert (Vocabulary.eos_id, Vocabulary.unknown_id, len(vocabulary)) == (0, 1, 6)
    assert vocabulary.encode("A dog, a BIRD and a zebra") == [1, 4, 1, 1, 1, 1, 5]  # unknown -> 1, no EOS
    assert vocabulary.decode([2, 3, 0, 4, -100]) == "cat ant"  # stops at EOS
    assert Vocabulary.from_json(vocabulary.to_json()) == vocabulary


def test_vocabulary_file_is_checked_against_its_sha256(tmp_path):
    vocabulary = Vocabulary.build(["red square"] * 6, min_count=5)
    path = vocabulary.save(tmp_path / "vocabulary.json")
    assert Vocabulary.load(path, expected_sha256=vocabulary.sha256) == vocabulary
    path.write_text(path.read_text().replace("square", "circle"))
    with pytest.raises(StrideError, match=r"vocabulary\.json: sha256 .* differs"):
        Vocabulary.load(path, expected_sha256=vocabulary.sha256)
    path.write_text(json.dumps({"words": ["red"]}))
    with pytest.raises(StrideError, match=r"vocabulary\.json: a vocabulary starts with <EOS>, <UKN>"):
        Vocabulary.load(path)


def test_shard_writer_adds_plain_named_files_only(tmp_path):
    with ShardWriter(tmp_path / "out") as writer:
        writer.add("train", "a", {"txt": b"x"})
        for bad in ("../escape.json", "manifest.json", ".hidden"):
            with pytest.raises((StrideError, ValueError)):
                writer.add_file(bad, b"{}")
        writer.add_file("extra.json", b"{}")
        writer.commit(dataset="d", task="t", source={}, parameters={}, sample_schema={})
    assert (tmp_path / "out" / "extra.json").read_bytes() == b"{}"


# -- COCO in the official layout -----------------------------------------------------------------

def jpeg(width: int, height: int, colour: tuple[int, int, int], mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def coco_image(root: Path, folder: str, image_id: int, payload: bytes | None, width: int, height: int) -> dict:
    name = f"COCO_{folder}_{image_id:012d}.jpg"
    if payload is not None:
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_bytes(payload)
    return {"license": 1, "file_name": name, "coco_url": "", "height": height, "width": width, "id": image_id}


def write_coco(root: Path) -> dict[int, bytes]:
    """Train 2014: 5 good images (one grayscale, one CMYK, one a PNG named .jpg), plus one of each defect."""
    payloads = {1: jpeg(40, 30, (200, 10, 10)), 2: jpeg(32, 48, (10, 200, 10), "L"), 3: jpeg(20, 20, (9, 9, 200)),
                4: jpeg(24, 16, (50, 60, 70), "CMYK"), 5: jpeg(16, 16, (90, 90, 9), fmt="PNG"),
                8: b"\xff\xd8\xff\xe0 not really a jpeg", 9: jpeg(10, 10, (1, 2, 3)), 11: jpeg(30, 20, (5, 5, 5)),
                12: jpeg(20, 30, (250, 250, 250))}
    sizes = {1: (40, 30), 2: (32, 48), 3: (20, 20), 4: (24, 16), 5: (16, 16), 6: (8, 8), 7: (8, 8), 8: (9, 9),
             9: (99, 10), 11: (30, 20), 12: (20, 30)}
    train_ids, val_ids = (1, 2, 3, 4, 5, 6, 7, 8, 9), (11, 12)
    (root / "annotations").mkdir(parents=True)
    for split, ids in (("train", train_ids), ("val", val_ids)):
        folder = f"{split}2014"
        if split == "train":  # image 6 gets no caption, image 7's file is missing
            (root / folder).mkdir()
        images = [coco_image(root, folder, i, None if i == 7 else payloads.get(i, jpeg(8, 8, (0, 0, 0))), *sizes[i])
                  for i in ids]
        annotations = [{"image_id": i, "id": 100 * i + k, "caption": f"A {split} picture number {i}, view {k}."}
                       for i in ids if i != 6 for k in range(2)]
        annotations += [{"image_id": 999, "id": 1, "caption": "an orphan"}] if split == "train" else []
        annotations += [{"image_id": ids[0], "id": 2, "caption": " ... "}]
        (root / "annotations" / f"captions_{folder}.json").write_text(json.dumps(
            {"info": {}, "licenses": [], "images": images, "annotations": annotations}))
    return payloads


def read_samples(root: Path, split: str) -> dict[int, tuple[bytes, dict]]:
    manifest = read_manifest(root)
    samples = {}
    for shard in manifest.split(split).shards:
        for key, members in iter_shard(root / shard.name, ("jpg", "json")):
            record = decode_member("json", members["json"])
            assert key == f"{record['image_id']:012d}"
            samples[record["image_id"]] = (members["jpg"], record)
    return samples


def test_official_coco_round_trip_counts_every_left_out_sample(tmp_path, caplog):
    payloads = write_coco(tmp_path / "coco")
    with caplog.at_level(logging.WARNING):
        manifest = prepare_coco_captions(tmp_path / "coco", tmp_path / "out", val_size=2, seed=0, min_count=1,
                                         samples_per_shard=2)
    verify_shards(tmp_path / "out", manifest)
    assert manifest.task == "captioning" and manifest.class_names == [] and manifest.source["year"] == "2014"
    assert manifest.skipped_samples == {
        "caption of an image id the file does not list": 1, "caption without a word (dropped)": 2,
        "image without captions": 1, "image file missing": 1, "image file does not decode": 1,
        "image size differs from its annotation": 1}
    assert "image file missing" in caplog.text and "COCO_train2014_000000000007.jpg" in caplog.text
    train, val, test = (read_samples(tmp_path / "out", split) for split in ("train", "val", "test"))
    assert sorted(val) == [3, 5] and sorted(train) == [1, 2, 4] and sorted(test) == [11, 12]  # seed 0 holds out 3, 5
    assert manifest.source["re_encoded_images"] == 2  # the CMYK JPEG and the PNG
    for image_id in (1, 2, 3):
        assert (train | val)[image_id][0] == payloads[image_id]  # JPEG bytes as distributed
    payload, record = (train | val)[1]
    assert record == {"image_id": 1, "file": "train2014/COCO_train2014_000000000001.jpg", "width": 40, "height": 30,
                      "captions": ["A train picture number 1, view 0.", "A train picture number 1, view 1."]}
    for payload, _ in (train | val).values():
        with Image.open(io.BytesIO(payload)) as image:
            assert image.format == "JPEG" and image.mode in ("RGB", "L")
    vocabulary_entry = manifest.parameters["vocabulary"]
    vocabulary = Vocabulary.load(tmp_path / "out" / "vocabulary.json", vocabulary_entry["sha256"])
    assert vocabulary_entry == {"file": "vocabulary.json", "sha256": vocabulary.sha256, "size": len(vocabulary),
                                "min_count": 1}
    assert "train" in vocabulary and "val" not in vocabulary  # test-split (val2014) words are never counted
    assert "4" in vocabulary and "3" not in vocabulary  # nor are the held-out validation captions
    pixels = np.concatenate([np.asarray(Image.open(io.BytesIO(payload)).convert("RGB")).reshape(-1, 3) / 255
                             for payload, _ in train.values()])
    np.testing.assert_allclose(manifest.stats["mean"], pixels.mean(axis=0), atol=2e-6)  # training pixels only
    np.testing.assert_allclose(manifest.stats["std"], pixels.std(axis=0), atol=2e-6)
    prepare_coco_captions(tmp_path / "coco", tmp_path / "again", val_size=2, seed=0, min_count=1)
    assert sorted(read_samples(tmp_path / "again", "val")) == sorted(val)


def test_karpathy_split_decides_the_splits(tmp_path):
    write_coco(tmp_path / "coco")
    entry = lambda image_id, split, folder="train2014": {  # noqa: E731
        "filepath": folder, "filename": f"COCO_{folder}_{image_id:012d}.jpg", "cocoid": image_id, "split": split,
        "sentences": [{"tokens": ["a", "cat"], "raw": f"A cat {image_id}.", "imgid": 0, "sentid": image_id}]}
    images = [entry(1, "train"), entry(2, "restval"), entry(3, "val"), entry(11, "test", "val2014"),
              entry(12, "val", "val2014"), entry(7, "train")]
    (tmp_path / "coco" / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    manifest = prepare_coco_captions(tmp_path / "coco", tmp_path / "out", karpathy_split="dataset_coco.json",
                                     min_count=0)
    assert {split: sorted(read_samples(tmp_path / "out", split)) for split in ("train", "val", "test")} == \
        {"train": [1, 2], "val": [3, 12], "test": [11]}
    assert manifest.skipped_samples == {"image file missing": 1} and manifest.source["kind"] == "coco-captions-karpathy"
    assert read_samples(tmp_path / "out", "test")[11][1]["captions"] == ["A cat 11."]
    assert manifest.parameters["karpathy_split"] == "dataset_coco.json" and manifest.parameters["val_size"] is None


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"][1].update(caption=5), r"captions_train2014\.json: annotations\[1\]\.caption is 5, "
                                                      r"expected a string"),
    (lambda d: d["images"][0].update(file_name="../../etc/passwd"), r"images\[0\]\.file_name is .*plain file"),
    (lambda d: d["images"][2].update(width=-3), r"images\[2\]\.width is -3, expected a positive integer"),
    (lambda d: d["images"][1].update(id=1), r"images\[1\]\.id 1 repeats"),
    (lambda d: d["annotations"][0].pop("image_id"), r"annotations\[0\]\.image_id is missing"),
    (lambda d: d.pop("images"), r"captions_train2014\.json: images is missing"),
    (lambda d: d["annotations"].__setitem__(3, "text"), r"annotations\[3\] is str, expected an object"),
])
def test_malformed_annotations_name_the_file_and_key_path(tmp_path, edit, message):
    write_coco(tmp_path / "coco")
    path = tmp_path / "coco" / "annotations" / "captions_train2014.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(StrideError, match=message):
        prepare_coco_captions(tmp_path / "coco", tmp_path / "out", val_size=1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda image: image.update(split="holdout"), r"images\[0\]\.split is 'holdout', expected one of train, restval"),
    (lambda image: image["sentences"][0].pop("raw"), r"images\[0\]\.sentences\[0\]\.raw is missing"),
    (lambda image: image["sentences"][0].update(tokens=[1]), r"images\[0\]\.sentences\[0\]\.tokens must be a list "),
    (lambda image: image.update(filepath="/etc"), r"images\[0\]\.filepath is \"/etc\", expected a plain"),
])
def test_malformed_karpathy_file_names_the_key_path(tmp_path, edit, message):
    write_coco(tmp_path / "coco")
    image = {"filepath": "train2014", "filename": "COCO_train2014_000000000001.jpg", "cocoid": 1, "split": "train",
             "sentences": [{"tokens": ["a"], "raw": "A cat."}]}
    edit(image)
    (tmp_path / "split.json").write_text(json.dumps({"images": [image]}))
    with pytest.raises(StrideError, match=r"split\.json: " + message):
        prepare_coco_captions(tmp_path / "coco", tmp_path / "out", karpathy_split=tmp_path / "split.json")


def test_a_threshold_leaving_no_word_is_refused_before_anything_is_written(tmp_path):
    write_coco(tmp_path / "coco")
    with pytest.raises(StrideError, match=r"no training word occurs more than min_count=1000 times"):
        prepare_coco_captions(tmp_path / "coco", tmp_path / "out", val_size=2, min_count=1000)
    assert not (tmp_path / "out").exists()


def test_the_constant_caption_baseline_is_the_most_frequent_training_caption():
    assert constant_caption(["A red square.", "a red square", "A blue circle!", "a blue circle", "a cat"]) == \
        "a blue circle"  # tied counts: the alphabetically first
    assert constant_caption([]) == ""


def test_layout_errors_say_what_is_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StrideError, match=r"no COCO caption annotations found; expected annotations/captions_train"):
        prepare_coco_captions(tmp_path / "empty", tmp_path / "out")
    write_coco(tmp_path / "coco")
    (tmp_path / "coco" / "annotations" / "captions_val2014.json").unlink()
    with pytest.raises(StrideError, match=r"captions_val2014\.json: missing"):
        prepare_coco_captions(tmp_path / "coco", tmp_path / "out")
    shutil.rmtree(tmp_path / "coco")
    write_coco(tmp_path / "coco")
    with pytest.raises(StrideError, match=r"--val-size must be between 1 and 6 \(the usable train2014 images\)"):
        prepare_coco_captions(tmp_path / "coco", tmp_path / "out", val_size=7)


# -- shapes-captions -----------------------------------------------------------------------------

def colour_mask(pixels: np.ndarray, colour: str) -> np.ndarray:
    """Pixels (H x W x 3) within JPEG error of a shape colour; backgrounds are grey, so never match."""
    return np.abs(pixels.astype(int) - np.array(COLOURS[colour])).max(axis=-1) < 45


def test_shapes_coco_is_deterministic_and_in_the_official_layout(tmp_path):
    scenes = write_shapes_coco(tmp_path / "a", seed=3, train_images=30, val_images=6)
    write_shapes_coco(tmp_path / "b", seed=3, train_images=30, val_images=6)
    write_shapes_coco(tmp_path / "c", seed=4, train_images=30, val_images=6)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 38 and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
                                    for f in files)
    assert (tmp_path / "a/annotations/captions_train2014.json").read_bytes() != \
        (tmp_path / "c/annotations/captions_train2014.json").read_bytes()
    data = json.loads((tmp_path / "a/annotations/captions_val2014.json").read_text())
    assert set(data) == {"info", "licenses", "images", "annotations"} and len(data["images"]) == 6
    assert data["images"][0]["file_name"] == f"COCO_val2014_{data['images'][0]['id']:012d}.jpg"
    assert len(data["annotations"]) == 30 and len(scenes) == 36


def test_shapes_captions_say_what_is_drawn(tmp_path):
    scenes = write_shapes_coco(tmp_path, seed=0, train_images=60, val_images=1)
    data = json.loads((tmp_path / "annotations/captions_train2014.json").read_text())
    captions = {}
    for annotation in data["annotations"]:
        captions.setdefault(annotation["image_id"], []).append(annotation["caption"])
    layouts = set()
    for image in data["images"]:
        scene, texts = scenes[image["id"]], captions[image["id"]]
        pixels = np.asarray(Image.open(tmp_path / "train2014" / image["file_name"]).convert("RGB"))
        assert len(texts) == 5 == len(set(texts))
        named = {word for text in texts for word in tokenize(text)}
        for colour in COLOURS:  # a colour is named exactly when its pixels are there
            assert (colour in named) == (colour_mask(pixels, colour).sum() >= 12), (colour, texts)
        assert {shape.kind for shape in scene.shapes} == named & set(KINDS)
        layouts.add(scene.layout if len(scene.shapes) == 2 else "single")
        for shape in scene.shapes:  # size words agree with the drawn area (small ~60-100 px, large ~210-370 px)
            area = colour_mask(pixels, shape.colour).sum()
            said = {word for text in texts for word in re.findall(rf"(\w+) {shape.colour} {shape.kind}", text.lower())}
            assert said <= ({"a", "small", "little"} if area < 160 else {"a", "large", "big"}), (area, texts)
        if len(scene.shapes) == 1:
            row, column = np.argwhere(colour_mask(pixels, scene.shapes[0].colour)).mean(axis=0) / 64
            assert ("left" in named) == (column < 0.4) and ("right" in named) == (column > 0.6)
            assert ("top" in named) == (row < 0.4) and ("bottom" in named) == (row > 0.6)
            continue
        first, second = (np.argwhere(colour_mask(pixels, s.colour)).mean(axis=0) for s in scene.shapes)
        axis = 1 if scene.layout == "horizontal" else 0  # columns: left of; rows: above
        assert first[axis] + 10 < second[axis]
        a, b = (f"{s.colour} {s.kind}" for s in scene.shapes)
        before = "(to the left of|left of)" if scene.layout == "horizontal" else "(above|over)"
        after = "(to the right of|right of)" if scene.layout == "horizontal" else "(below|under)"
        assert any(re.search(rf"{a} {before} a (\w+ )?{b}\b", text) for text in texts), texts
        assert not any(re.search(rf"{b} {before} a (\w+ )?{a}\b", text) or
                       re.search(rf"{a} {after} a (\w+ )?{b}\b", text) for text in texts), texts
    assert layouts == {"single", "horizontal", "vertical"}


@pytest.fixture(scope="module")
def shapes_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "data"
    prepare_shapes_captions(out, seed=0, val_size=40, samples_per_shard=64, train_images=400, val_images=40)
    return out


def test_prepare_shapes_captions_vocabulary_covers_its_captions(shapes_dataset):
    manifest = read_manifest(shapes_dataset)
    assert manifest.dataset == "shapes_captions" and manifest.skipped_samples == {}
    assert {name: split.num_samples for name, split in manifest.splits.items()} == {"train": 360, "val": 40,
                                                                                    "test": 40}
    vocabulary = Vocabulary.load(shapes_dataset / "vocabulary.json", manifest.parameters["vocabulary"]["sha256"])
    captions = [c for _, record in read_samples(shapes_dataset, "train").values() for c in record["captions"]]
    assert all(Vocabulary.unknown_id not in vocabulary.encode(c) for c in captions)  # templates repeat: min 5 is fine
    assert {"red", "circle", "left", "above", "gravel"} <= set(vocabulary.words)


# -- the datamodule ------------------------------------------------------------------------------

def test_evaluation_batches_hold_the_first_caption_then_eos_then_padding(shapes_dataset):
    data = CaptioningData(shapes_dataset, batch_size=16, eval_batch_size=16, image_size=32, max_words=50,
                          pin_memory=False)
    data.setup()
    assert data.input_shape == (3, 32, 32) and data.num_classes == len(data.vocabulary)
    batch = next(iter(data.val_dataloader()))
    # loader workers get it pickled; our own object, round-tripped in this process
    pickle.loads(pickle.dumps(data.collate))
    images, tokens, lengths, references = data.on_after_batch_transfer(batch, 0)
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0.05
    assert tokens.dtype == lengths.dtype == torch.int64 and tokens.shape == (16, int(lengths.max()))
    assert len(references) == 16 and all(len(r) == 5 for r in references)
    for row, length, refs in zip(tokens.tolist(), lengths.tolist(), references):
        assert row[:length] == data.vocabulary.encode(refs[0]) + [0]
        assert row[length:] == [-100] * (len(row) - length)
        assert data.vocabulary.decode(row) == " ".join(tokenize(refs[0]))


def test_training_draws_one_caption_per_epoch_deterministically(shapes_dataset):
    data = CaptioningData(shapes_dataset, batch_size=8, image_size=24, max_words=3, random_crop=True,
                          horizontal_flip=True, pin_memory=False, seed=5)
    data.trainer = SimpleNamespace(training=True, current_epoch=0, global_rank=0, world_size=1)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    images, tokens, lengths, references = data.on_after_batch_transfer(batch, 0)
    assert images.shape == (8, 3, 24, 24) and lengths.max() <= 4  # max_words 3, then EOS
    assert ((tokens == 0).sum(dim=1) == 1).all() and (tokens[torch.arange(8), lengths - 1] == 0).all()
    ids = list(range(200))
    assert caption_choice(5, 0, ids, [5] * 200) == caption_choice(5, 0, ids, [5] * 200)
    assert caption_choice(5, 0, ids, [5] * 200) != caption_choice(5, 1, ids, [5] * 200)
    assert set(caption_choice(5, 0, ids, [5] * 200)) == set(range(5))


def test_several_captions_per_image_repeat_the_image_once_per_caption(shapes_dataset):
    """The study's "5 randomly chosen ground truth image captions" per image: batch 2 trains on 10 captions."""
    data = CaptioningData(shapes_dataset, batch_size=2, image_size=16, captions_per_image=5, pin_memory=False, seed=5)
    data.trainer = SimpleNamespace(training=True, current_epoch=0, global_rank=0, world_size=1)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    images, tokens, lengths, references = data.on_after_batch_transfer(batch, 0)
    assert images.shape == (10, 3, 16, 16) and tokens.shape[0] == lengths.shape[0] == len(references) == 10
    for image in range(2):
        rows = range(5 * image, 5 * image + 5)
        assert all(torch.equal(images[row], images[5 * image]) for row in rows)
        decoded = {data.vocabulary.decode(tokens[row].tolist()) for row in rows}
        own = {" ".join(tokenize(c)) for c in batch[4][image]}
        assert decoded == own  # five distinct captions, every one the image's own (shapes scenes have 5)
    ids = list(range(50))
    drawn = caption_choice(5, 0, ids, [3] * 50, per_image=4)  # fewer captions than asked: all, then repeats
    assert len(drawn) == 200 and all(set(drawn[4 * i:4 * i + 4]) == {0, 1, 2} for i in range(50))
    with pytest.raises(StrideError, match="captions_per_image >= 1"):
        CaptioningData(shapes_dataset, batch_size=2, image_size=16, captions_per_image=0, pin_memory=False)


def test_flip_swaps_left_and_right_with_the_image(shapes_dataset):
    data = CaptioningData(shapes_dataset, batch_size=8, image_size=16, horizontal_flip=True, pin_memory=False)
    left, right, red = (data.vocabulary.id(word) for word in ("left", "right", "red"))
    tokens = torch.tensor([[red, left, right, 0]] * 64)
    images = torch.arange(64 * 3 * 4 * 4, dtype=torch.float32).reshape(64, 3, 4, 4)
    torch.manual_seed(0)
    flipped_images, flipped_tokens = data.flip(images, tokens)
    mirrored = (flipped_images == images.flip(-1)).flatten(1).all(dim=1)
    assert 0 < int(mirrored.sum()) < 64
    assert (flipped_tokens[mirrored] == torch.tensor([red, right, left, 0])).all()
    assert (flipped_tokens[~mirrored] == tokens[~mirrored]).all()


def test_a_vocabulary_that_does_not_match_the_manifest_is_refused(shapes_dataset, tmp_path):
    copy = shutil.copytree(shapes_dataset, tmp_path / "copy")
    words = json.loads((copy / "vocabulary.json").read_text())
    words["words"][2:4] = words["words"][3:1:-1]
    (copy / "vocabulary.json").write_text(json.dumps(words))
    with pytest.raises(StrideError, match=r"copy/vocabulary\.json: sha256 .* differs from the manifest"):
        CaptioningData(copy, batch_size=4)
