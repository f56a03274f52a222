"""WIDER FACE from its official files (folders, zips, evaluation .mat, RetinaFace label.txt); the composed faces."""

import json
import logging
import zipfile

import numpy as np
import pytest
from PIL import Image

from stride.datamodules.manifest import read_manifest, verify_shards
from stride.datamodules.sources.faces import (
    EVENTS,
    Assets,
    astronaut_face,
    compose_image,
    prepare_faces,
    render,
    write_composed_wider,
)
from stride.datamodules.sources.wider_eval_mat import read_wider_eval, write_wider_eval
from stride.datamodules.sources.wider_face import parse_bbx_gt, parse_landmark_labels, prepare_wider_face
from stride.datamodules.streaming import decode_member, iter_shard
from stride.errors import StrideError

ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
# As the official files are written: a trailing space after every face line, N = 0 followed by a placeholder line.
TRAIN_TXT = """0--Parade/0_Parade_marchingband_1_5.jpg
2
4 6 12 14 0 0 0 0 0 0 
30 2 8 9 2 1 1 0 2 1 
0--Parade/0_Parade_Parade_0_17.jpg
0
0 0 0 0 0 0 0 0 0 0 
1--Handshaking/1_Handshaking_Handshaking_1_3.jpg
3
1 1 10 10 1 0 0 0 1 0 
20 20 0 7 2 0 0 1 0 0 
40 10 6 5 0 0 1 0 0 1 
1--Handshaking/1_Handshaking_Handshaking_1_8.jpg
1
3 3 20 25 0 1 0 0 0 0 
"""
VAL_TXT = """0--Parade/0_Parade_marchingband_1_20.jpg
1
10 10 16 18 0 0 0 0 0 0 
2--Demonstration/2_Demonstration_Protesters_2_4.jpg
2
5 5 9 9 1 0 0 0 0 0 
2 30 4 0 2 0 0 1 0 0 
"""
SIZES = {"0_Parade_marchingband_1_5.jpg": (48, 40), "0_Parade_Parade_0_17.jpg": (32, 24),
         "1_Handshaking_Handshaking_1_3.jpg": (56, 44), "1_Handshaking_Handshaking_1_8.jpg": (40, 40),
         "0_Parade_marchingband_1_20.jpg": (36, 48), "2_Demonstration_Protesters_2_4.jpg": (44, 40)}


def colour_of(name):
    code = sum(name.encode())
    return code * 37 % 256, code * 91 % 256, code * 53 % 256


def write_wider(root, train_txt=TRAIN_TXT, val_txt=VAL_TXT):
    """The official layout with one plain-coloured JPEG per annotated image; returns its files' contents."""
    split = root / "wider_face_split"
    split.mkdir(parents=True)
    (split / "wider_face_train_bbx_gt.txt").write_text(train_txt)
    (split / "wider_face_val_bbx_gt.txt").write_text(val_txt)
    written = {}
    for tree, text in (("WIDER_train", train_txt), ("WIDER_val", val_txt)):
        for line in text.splitlines():
            if line.endswith(".jpg"):
                path = root / tree / "images" / line
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", SIZES[path.name], colour_of(path.name)).save(path, quality=95)
                written[line] = path.read_bytes()
    return written


def read_samples(out, split):
    manifest = read_manifest(out)
    samples = []
    for shard in manifest.split(split).shards:
        for key, members in iter_shard(out / shard.name, ("jpg", "json")):
            samples.append((key, members["jpg"], decode_member("json", members["json"])))
    return samples


def expected_faces(text):
    """file -> list of face rows, from the fixture text by hand-free parsing of the known layout."""
    lines, faces, at = text.splitlines(), {}, 0
    while at < len(lines):
        count = int(lines[at + 1])
        faces[lines[at]] = [list(map(int, row.split())) for row in lines[at + 2: at + 2 + count]]
        at += 2 + max(count, 1)
    return faces


def test_official_files_round_trip_through_shards(tmp_path):
    written = write_wider(tmp_path / "raw")
    manifest = prepare_wider_face(tmp_path / "raw", tmp_path / "out", val_size=1, seed=3, samples_per_shard=2)
    verify_shards(tmp_path / "out", manifest)
    assert manifest.task == "detection" and manifest.class_names == ["face"]
    assert {name: split.num_samples for name, split in manifest.splits.items()} == {"train": 3, "val": 1, "test": 2}
    faces = {**expected_faces(TRAIN_TXT), **expected_faces(VAL_TXT)}
    seen = {}
    for split in ("train", "val", "test"):
        for key, jpg, record in read_samples(tmp_path / "out", split):
            assert "." not in key and record["file"].rsplit("/", 1)[1][:-4] in key
            assert jpg == written[record["file"]]  # the JPEG bytes as distributed
            seen[record["file"]] = split
            rows = faces[record["file"]]
            assert record["event"] == record["file"].split("/")[0]
            assert (record["width"], record["height"]) == SIZES[record["file"].split("/")[1]]
            assert record["boxes"] == [row[:4] for row in rows]
            for index, name in enumerate(ATTRIBUTES):
                assert record[name] == [row[4 + index] for row in rows]
            assert record["trainable"] == [row[2] > 0 and row[3] > 0 for row in rows]
            assert "landmarks" not in record and "subsets" not in record
    assert {file for file, split in seen.items() if split == "test"} == set(expected_faces(VAL_TXT))
    assert {file for file, split in seen.items() if split != "test"} == set(expected_faces(TRAIN_TXT))
    counts = manifest.annotations["faces"]
    assert counts["test"]["kept"] == 2 and counts["test"]["dropped"] == {"zero_width_or_height": 1, "outside_image": 0}
    assert sum(counts[s]["kept"] for s in ("train", "val")) == 5
    assert sum(counts[s]["dropped"]["zero_width_or_height"] for s in ("train", "val")) == 1
    assert sum(counts[s]["images_without_faces"] for s in ("train", "val")) == 1
    assert counts["test"]["partly_outside_image"] == 0
    # stats: plain colours, so the mean is the pixel-weighted mean of the training images' colours (JPEG: +-1/255)
    train_files = [file.split("/")[1] for file, split in seen.items() if split == "train"]
    weights = np.array([len(range(0, SIZES[f][0], 4)) * len(range(0, SIZES[f][1], 4)) for f in train_files])
    colours = np.array([colour_of(f) for f in train_files]) / 255
    np.testing.assert_allclose(manifest.stats["mean"], weights @ colours / weights.sum(), atol=2 / 255)


def test_validation_split_is_deterministic_and_keys_stable(tmp_path):
    write_wider(tmp_path / "raw")
    keys = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        prepare_wider_face(tmp_path / "raw", tmp_path / name, val_size=2, seed=seed)
        keys[name] = [key for key, _, _ in read_samples(tmp_path / name, "val")]
    assert keys["a"] == keys["b"]
    assert keys["a"] != keys["c"]
    assert all(key[:5].isdigit() for key in keys["a"])  # position in the annotation file: the same in any split


MALFORMED = {
    "bad count": (TRAIN_TXT.replace("\n2\n4 6", "\ntwo\n4 6"), 2, r"expected 1 integers \(the face count of 0--Parade"),
    "short line": (TRAIN_TXT.replace("30 2 8 9 2 1 1 0 2 1 ", "30 2 8 9 2 1 1 0 2"), 4,
                   r"expected 10 integers \(x1 y1 w h blur expression illumination invalid occlusion pose\), found 9"),
    "non-integer": (TRAIN_TXT.replace("4 6 12 14", "4 6 12.5 14"), 3, r"expected 10 integers"),
    "too few faces": (TRAIN_TXT.replace("1\n3 3 20 25 0 1 0 0 0 0 \n", "2\n3 3 20 25 0 1 0 0 0 0 \n"), 16,
                      r"expected face 2 of 2 of 1--Handshaking/1_Handshaking_Handshaking_1_8.jpg .*end of file"),
    "count runs into the next image": (TRAIN_TXT.replace("\n2\n4 6", "\n3\n4 6"), 5, r"expected 10 integers"),
    "attribute out of range": (TRAIN_TXT.replace("30 2 8 9 2 1 1 0 2 1", "30 2 8 9 3 1 1 0 2 1"), 4,
                               r"blur 3 out of range 0..2"),
    "not a path": (TRAIN_TXT.replace("0--Parade/0_Parade_Parade_0_17.jpg", "0_Parade_Parade_0_17"), 5,
                   r"expected an image path <event>/<name>.jpg"),
    "placeholder not zero": (TRAIN_TXT.replace("0\n0 0 0 0 0 0 0 0 0 0", "0\n0 0 5 0 0 0 0 0 0 0"), 7,
                             r"0--Parade/0_Parade_Parade_0_17.jpg has 0 faces, so this line should be the all-zero "
                             r"placeholder, found '0 0 5 0 0 0 0 0 0 0'"),
    "escaping path": (TRAIN_TXT.replace("0--Parade/0_Parade_Parade_0_17.jpg", "../0_Parade_Parade_0_17.jpg"), 5,
                      r"expected an image path"),
    "listed twice": (TRAIN_TXT + "0--Parade/0_Parade_Parade_0_17.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n", 16,
                     r"0--Parade/0_Parade_Parade_0_17.jpg is listed a second time"),
}


@pytest.mark.parametrize("defect", MALFORMED)
def test_malformed_annotation_names_file_and_line(tmp_path, defect):
    text, line, message = MALFORMED[defect]
    with pytest.raises(StrideError, match=rf"wider_face_train_bbx_gt.txt, line {line}: {message}"):
        parse_bbx_gt(text, "/x/wider_face_train_bbx_gt.txt")


def test_a_missing_placeholder_line_is_read_as_no_faces():
    text = TRAIN_TXT.replace("0\n0 0 0 0 0 0 0 0 0 0 \n", "0\n")
    images = parse_bbx_gt(text, "t")
    assert [len(image.boxes) for image in images] == [2, 0, 3, 1]
    assert images[2].sized.tolist() == [True, False, True]


def test_missing_or_corrupt_images_are_errors_naming_them(tmp_path):
    write_wider(tmp_path / "raw")
    missing = tmp_path / "raw/WIDER_val/images/2--Demonstration/2_Demonstration_Protesters_2_4.jpg"
    missing.unlink()
    with pytest.raises(StrideError, match=r"1 image\(s\) named by the annotation files are missing, e\.g\. "
                                          r"WIDER_val/images/2--Demonstration/2_Demonstration_Protesters_2_4.jpg"):
        prepare_wider_face(tmp_path / "raw", tmp_path / "out", val_size=1)
    assert not (tmp_path / "out").exists()
    missing.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(StrideError, match=r"2_Demonstration_Protesters_2_4.jpg: image file does not decode"):
        prepare_wider_face(tmp_path / "raw", tmp_path / "out", val_size=1)
    Image.new("RGB", (8, 8)).save(missing, format="PNG")
    with pytest.raises(StrideError, match=r"2_Demonstration_Protesters_2_4.jpg: not a JPEG image"):
        prepare_wider_face(tmp_path / "raw", tmp_path / "out", val_size=1)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))  # nothing half-written


def test_a_grayscale_jpeg_is_re_encoded_as_rgb_and_counted(tmp_path):
    write_wider(tmp_path / "raw")
    grey = tmp_path / "raw/WIDER_val/images/0--Parade/0_Parade_marchingband_1_20.jpg"
    Image.new("L", SIZES[grey.name], 90).save(grey)
    manifest = prepare_wider_face(tmp_path / "raw", tmp_path / "out", val_size=1)
    assert manifest.source["re_encoded_images"] == 1
    record = next(s for s in read_samples(tmp_path / "out", "test") if s[2]["file"].endswith(grey.name))
    assert decode_member("jpg", record[1]).shape == (3, 48, 36)


def test_a_box_wholly_outside_its_image_is_dropped_counted_and_logged(tmp_path, caplog):
    """Before, `5000 5000 100 100` on a 44 x 40 image was a training target, counted as partly outside."""
    val_txt = VAL_TXT.replace("2\n5 5 9 9", "4\n5000 5000 100 100 0 0 0 0 0 0 \n-30 2 30 8 0 0 0 0 0 0 \n5 5 9 9")
    write_wider(tmp_path / "raw", val_txt=val_txt)
    with caplog.at_level(logging.WARNING):
        manifest = prepare_wider_face(tmp_path / "raw", tmp_path / "out", val_size=1)
    record = next(s[2] for s in read_samples(tmp_path / "out", "test") if s[2]["file"].startswith("2--"))
    assert record["boxes"][:2] == [[5000, 5000, 100, 100], [-30, 2, 30, 8]]
    assert record["trainable"] == [False, False, True, False]
    counts = manifest.annotations["faces"]["test"]
    assert counts["dropped"] == {"zero_width_or_height": 1, "outside_image": 2} and counts["kept"] == 2
    assert counts["partly_outside_image"] == 0
    assert ("left out 2 face box(es) of the test split lying wholly outside their image (first: 2--Demonstration/"
            "2_Demonstration_Protesters_2_4.jpg (44 x 40): [5000, 5000, 100, 100])") in caplog.text


def test_official_zip_archives_are_read_in_place(tmp_path):
    written = write_wider(tmp_path / "raw")
    (tmp_path / "zipped").mkdir()
    for folder in ("WIDER_train", "WIDER_val", "wider_face_split"):
        with zipfile.ZipFile(tmp_path / "zipped" / f"{folder}.zip", "w") as archive:
            for path in sorted((tmp_path / "raw" / folder).rglob("*")):
                archive.write(path, path.relative_to(tmp_path / "raw").as_posix())
    manifest = prepare_wider_face(tmp_path / "zipped", tmp_path / "out", val_size=1)
    assert manifest.source["archives"] == ["WIDER_train.zip", "WIDER_val.zip", "wider_face_split.zip"]
    assert {record["file"]: jpg for _, jpg, record in read_samples(tmp_path / "out", "test")} == \
        {file: written[file] for file in expected_faces(VAL_TXT)}
    with zipfile.ZipFile(tmp_path / "zipped" / "WIDER_val.zip", "a") as archive:
        archive.writestr("../evil.jpg", b"x")
    with pytest.raises(StrideError, match=r"WIDER_val.zip: member '../evil.jpg' is not a plain relative name"):
        prepare_wider_face(tmp_path / "zipped", tmp_path / "out2", val_size=1)


# -- landmarks -----------------------------------------------------------------------------------

LABEL_TXT = """# 0--Parade/0_Parade_marchingband_1_5.jpg
30 2 8 9 31.5 4.25 0.0 35.0 4.0 0.0 33.0 6.5 1.0 31.0 8.0 0.0 -1.0 -1.0 -1.0 0.82
4 6 12 14 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0
# 0--Parade/0_Parade_Parade_0_17.jpg
# 2--Demonstration/2_Demonstration_Protesters_2_4.jpg
5 5 9 9 6.0 7.0 8.0 7.0 7.0 8.0 6.0 9.0 8.0 9.0 0.5
2 30 4 0
# 9--Nowhere/9_nowhere.jpg
1 1 2 2
"""


def test_label_txt_gives_landmarks_matched_by_box(tmp_path):
    parsed = parse_landmark_labels(LABEL_TXT, "label.txt")
    assert parsed["0--Parade/0_Parade_Parade_0_17.jpg"] == []
    first = parsed["0--Parade/0_Parade_marchingband_1_5.jpg"]
    assert first[0].box == (30, 2, 8, 9) and first[0].points == [31.5, 4.25, 35, 4, 33, 6.5, 31, 8, -1, -1]
    assert first[1].points is None  # every landmark missing
    assert parsed["2--Demonstration/2_Demonstration_Protesters_2_4.jpg"][0].points == [6, 7, 8, 7, 7, 8, 6, 9, 8, 9]
    write_wider(tmp_path / "raw")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "label.txt").write_text(LABEL_TXT)
    manifest = prepare_wider_face(tmp_path / "raw", tmp_path / "out", val_size=1, labels=tmp_path / "labels")
    records = {r["file"]: r for split in ("train", "val", "test") for _, _, r in read_samples(tmp_path / "out", split)}
    assert records["0--Parade/0_Parade_marchingband_1_5.jpg"]["landmarks"] == [  # in the bbx_gt order of the faces
        None, [31.5, 4.25, 35, 4, 33, 6.5, 31, 8, -1, -1]]
    assert records["2--Demonstration/2_Demonstration_Protesters_2_4.jpg"]["landmarks"] == [
        [6, 7, 8, 7, 7, 8, 6, 9, 8, 9], None]
    assert "landmarks" not in records["1--Handshaking/1_Handshaking_Handshaking_1_3.jpg"]
    assert manifest.annotations["landmarks"]["labelled_images_not_in_wider"] == 1
    assert manifest.annotations["landmarks"]["WIDER_train"]["faces_with_landmarks"] == 1


@pytest.mark.parametrize("text, message", [
    ("1 2 3 4\n", r"line 1: expected '# <event>/<name>.jpg' before the first face"),
    ("# a/b.jpg\n1 2 3 4 5\n", r"line 2: 5 numbers; expected 4 numbers"),
    ("# a/b.jpg\n1 2 x 4\n", r"line 2: expected numbers"),
    ("# a/b.jpg\n# a/b.jpg\n", r"line 2: a/b.jpg is listed a second time")])
def test_malformed_label_txt_names_the_line(text, message):
    with pytest.raises(StrideError, match=rf"label.txt, {message}"):
        parse_landmark_labels(text, "label.txt")


# -- the evaluation .mat files -------------------------------------------------------------------

def val_boxes():
    return {file: np.array([row[:4] for row in rows]).reshape(-1, 4) for file, rows in expected_faces(VAL_TXT).items()}


VAL_SUBSETS = {"easy": {"0--Parade/0_Parade_marchingband_1_20.jpg": [True],
                        "2--Demonstration/2_Demonstration_Protesters_2_4.jpg": [False, False]},
               "medium": {"0--Parade/0_Parade_marchingband_1_20.jpg": [True],
                          "2--Demonstration/2_Demonstration_Protesters_2_4.jpg": [True, False]},
               "hard": {"0--Parade/0_Parade_marchingband_1_20.jpg": [True],
                        "2--Demonstration/2_Demonstration_Protesters_2_4.jpg": [True, True]}}


def test_eval_mat_round_trip_in_the_official_structure(tmp_path):
    from scipy.io import loadmat

    paths = write_wider_eval(tmp_path / "gt", val_boxes(), VAL_SUBSETS)
    assert [p.name for p in paths] == ["wider_face_val.mat", "wider_easy_val.mat", "wider_medium_val.mat",
                                       "wider_hard_val.mat"]
    # read as the official Python port of the evaluation does
    hard, faces = loadmat(tmp_path / "gt/wider_hard_val.mat"), loadmat(tmp_path / "gt/wider_face_val.mat")
    assert [str(faces["event_list"][i][0][0]) for i in range(2)] == ["0--Parade", "2--Demonstration"]
    assert str(faces["file_list"][1][0][0][0][0]) == "2_Demonstration_Protesters_2_4"
    np.testing.assert_array_equal(faces["face_bbx_list"][1][0][0][0], [[5, 5, 9, 9], [2, 30, 4, 0]])
    np.testing.assert_array_equal(hard["gt_list"][1][0][0][0][:, 0], [1, 2])
    keep_index = hard["gt_list"][1][0][0][0]  # as RetinaFace's widerface_evaluate marks the counted faces
    ignore = np.zeros(len(faces["face_bbx_list"][1][0][0][0]))
    ignore[keep_index - 1] = 1  # IndexError if the indices were stored as doubles
    assert ignore.tolist() == [1, 1]
    read = read_wider_eval(tmp_path / "gt")
    assert list(read) == list(val_boxes())
    for file, boxes in val_boxes().items():
        np.testing.assert_array_equal(read[file].boxes, boxes)
        for subset, masks in VAL_SUBSETS.items():
            assert read[file].subsets[subset].tolist() == masks[file]
    again = write_wider_eval(tmp_path / "gt2", val_boxes(), VAL_SUBSETS)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]  # no time stamp in the header


def test_eval_subsets_land_in_the_test_samples(tmp_path):
    write_wider(tmp_path / "raw")
    write_wider_eval(tmp_path / "raw/eval_tools/ground_truth", val_boxes(), VAL_SUBSETS)
    manifest = prepare_wider_face(tmp_path / "raw", tmp_path / "out", val_size=1)
    for _, _, record in read_samples(tmp_path / "out", "test"):
        assert record["subsets"] == {subset: masks[record["file"]] for subset, masks in VAL_SUBSETS.items()}
    assert all("subsets" not in r for _, _, r in read_samples(tmp_path / "out", "train"))
    assert manifest.annotations["subsets"]["faces"] == {"easy": 1, "medium": 2, "hard": 3}


def test_inconsistent_or_malformed_eval_files_are_errors(tmp_path):
    from scipy.io import savemat

    write_wider(tmp_path / "raw")
    gt = tmp_path / "raw/eval_tools/ground_truth"
    boxes = val_boxes()
    boxes["2--Demonstration/2_Demonstration_Protesters_2_4.jpg"] = np.array([[5, 5, 9, 9]])
    subsets = {s: {**m, "2--Demonstration/2_Demonstration_Protesters_2_4.jpg": [True]} for s, m in VAL_SUBSETS.items()}
    write_wider_eval(gt, boxes, subsets)
    with pytest.raises(StrideError, match=r"2_Demonstration_Protesters_2_4.jpg: .*wider_face_val.mat gives "
                                          r"1 face\(s\), .*wider_face_val_bbx_gt.txt 2"):
        prepare_wider_face(tmp_path / "raw", tmp_path / "out", val_size=1)
    extra = {**val_boxes(), "7--Cheering/7_Cheering_1.jpg": np.zeros((0, 4))}
    write_wider_eval(gt, extra, {s: {**m, "7--Cheering/7_Cheering_1.jpg": []} for s, m in VAL_SUBSETS.items()})
    with pytest.raises(StrideError, match=r"wider_face_val.mat lists 1 image\(s\) that .*wider_face_val_bbx_gt.txt "
                                          r"does not, e.g. 7--Cheering/7_Cheering_1.jpg"):
        prepare_wider_face(tmp_path / "raw", tmp_path / "out", val_size=1)
    (gt / "wider_medium_val.mat").unlink()
    with pytest.raises(StrideError, match=r"ground_truth: holds some WIDER FACE evaluation files but not "
                                          r"wider_medium_val.mat"):
        prepare_wider_face(tmp_path / "raw", tmp_path / "out", val_size=1)
    write_wider_eval(gt, val_boxes(), VAL_SUBSETS)
    savemat(gt / "wider_easy_val.mat", {"event_list": np.zeros((2, 1))})
    with pytest.raises(StrideError, match=r"wider_easy_val.mat: missing variable\(s\) file_list, gt_list"):
        read_wider_eval(gt)
    (gt / "wider_easy_val.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(StrideError, match=r"wider_easy_val.mat: cannot read as a MATLAB v5 file"):
        read_wider_eval(gt)
    write_wider_eval(gt, val_boxes(), {**VAL_SUBSETS, "hard": {f: [True] * len(b) for f, b in val_boxes().items()}})
    from scipy.io import loadmat
    hard = loadmat(gt / "wider_hard_val.mat")
    hard["gt_list"][1][0][0][0] = np.array([[3.0]])
    savemat(gt / "wider_hard_val.mat", {k: v for k, v in hard.items() if not k.startswith("__")})
    with pytest.raises(StrideError, match=r"wider_hard_val.mat: gt_list image 2--Demonstration/.*holds face indices "
                                          r"\[3\]; expected one-based indices 1..2"):
        read_wider_eval(gt)
    assert not (tmp_path / "out").exists()


# -- the composed faces --------------------------------------------------------------------------

def test_composed_wider_is_deterministic_and_split_apart(tmp_path):
    sizes = dict(train_images=16, val_images=8)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_composed_wider(tmp_path / name, seed=seed, **sizes)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".mat"]) == 4
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    txt = "wider_face_split/wider_face_train_bbx_gt.txt"
    assert (tmp_path / "a" / txt).read_bytes() != (tmp_path / "c" / txt).read_bytes()
    composition = json.loads((tmp_path / "a/composition.json").read_text())["images"]
    crops = {tree: {c for f, image in composition.items() if f.startswith(tree)
                    for c in image["faces"] + [d["crop"] for d in image["distractors"]]}
             for tree in ("WIDER_train", "WIDER_val")}
    assert crops["WIDER_train"] and crops["WIDER_val"] and not crops["WIDER_train"] & crops["WIDER_val"]
    assert all(c < 100 for f, image in composition.items() for c in image["faces"])  # faces are the first 100
    train = parse_bbx_gt((tmp_path / "a" / txt).read_text(), txt)
    assert sum(len(image.boxes) == 0 for image in train) == 1
    assert {image.event for image in train} == {event.name for event in EVENTS}
    assert min(int(image.boxes[:, 3].min()) for image in train if len(image.boxes)) <= 12  # small faces too


def test_composed_boxes_are_exact():
    assets, rng = Assets(), np.random.default_rng(0)
    for event in EVENTS:
        composed = compose_image(assets, rng, "val", event, 150, 120)
        changed = np.zeros((120, 150), bool)
        for paste in composed.faces + composed.distractors:
            x, y, w, h = paste.box
            np.testing.assert_array_equal(composed.image[y:y + h, x:x + w], render(assets, paste))
            changed[y:y + h, x:x + w] = True
        np.testing.assert_array_equal(composed.image[~changed], composed.background[~changed])
        for paste in composed.faces:  # each box edge row and column differs from the photograph beneath
            x, y, w, h = paste.box
            for edge in (np.s_[y, x:x + w], np.s_[y + h - 1, x:x + w], np.s_[y:y + h, x], np.s_[y:y + h, x + w - 1]):
                assert np.abs(composed.image[edge].astype(int) - composed.background[edge]).mean() > 3


def test_prepare_faces_runs_the_converter_end_to_end(tmp_path):
    manifest = prepare_faces(tmp_path / "out", seed=1, val_size=4, raw_dir=tmp_path / "raw", train_images=20,
                             val_images=8)
    assert manifest.dataset == "faces" and manifest.source["kind"] == "faces-composed"
    assert {name: split.num_samples for name, split in manifest.splits.items()} == {"train": 16, "val": 4, "test": 8}
    test = read_samples(tmp_path / "out", "test")
    assert all(set(record["subsets"]) == {"easy", "medium", "hard"} for _, _, record in test)
    for _, jpg, record in test:
        image = decode_member("jpg", jpg)
        assert image.shape == (3, record["height"], record["width"])
        for (x, y, w, h), easy, medium in zip(record["boxes"], record["subsets"]["easy"], record["subsets"]["medium"]):
            assert easy == (min(w, h) >= 32) and medium == (min(w, h) >= 16)
            assert 0 <= x and x + w <= record["width"] and 0 <= y and y + h <= record["height"]
    assert sum(manifest.annotations["faces"][s]["kept"] for s in ("train", "val", "test")) > 28
    assert not read_manifest(tmp_path / "out").skipped_samples


def test_astronaut_face_box_lies_on_the_face():
    image, (x1, y1, x2, y2) = astronaut_face()
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    assert 60 <= x2 - x1 <= 120 and 80 <= y2 - y1 <= 130
    face = image[y1:y2, x1:x2].astype(int)
    red, green, blue = face[..., 0].mean(), face[..., 1].mean(), face[..., 2].mean()
    assert red > green > blue  # skin, not the grey wall or the black suit ring
