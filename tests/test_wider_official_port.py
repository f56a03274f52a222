"""stride's WIDER FACE AP against the widely used Python port of the official evaluation (tests/wider_port.py):
the port reads the ground-truth .mat files stride writes and the prediction files stride writes, and both give
the same easy / medium / hard AP on random sets."""

from __future__ import annotations

import numpy as np
import pytest
from wider_port import SUBSETS, evaluate

from stride.datamodules.sources.wider_eval_mat import read_wider_eval, write_wider_eval
from stride.metrics.detection_ap import read_prediction_files, wider_face_ap, write_prediction_files


def random_set(rng: np.random.Generator, images: int) -> tuple[dict, dict, dict]:
    """Faces (x y w h), nested subsets (easy within medium within hard), and detections by descending score:
    jittered faces (some hits, some misses), boxes at IoU 0.5 exactly and clutter, a few images without faces or
    without detections."""
    boxes, subsets, predictions = {}, {s: {} for s in SUBSETS}, {}
    for index in range(images):
        file = f"{index % 3}--Event{index % 3}/{index % 3}_Event_{index}.jpg"
        count = 0 if index == 1 else int(rng.integers(1, 6))
        xy = rng.uniform(0, 200, (count, 2))
        wh = rng.uniform(4, 60, (count, 2))
        boxes[file] = np.round(np.column_stack([xy, wh]))
        hard = rng.random(count) < 0.8
        medium = hard & (rng.random(count) < 0.7)
        subsets["hard"][file], subsets["medium"][file] = hard, medium
        subsets["easy"][file] = medium & (rng.random(count) < 0.6)
        faces = np.column_stack([boxes[file][:, :2], boxes[file][:, :2] + boxes[file][:, 2:]])
        hits = faces[rng.random(count) < 0.7]
        hits = hits + rng.normal(0, 2.5, hits.shape)
        # the upper half of an odd-height face: IoU exactly 0.5 only with the tools' +1 pixels
        halves = faces[(faces[:, 3] - faces[:, 1]) % 2 == 1].copy()
        halves[:, 3] = halves[:, 1] + (halves[:, 3] - halves[:, 1] - 1) / 2
        clutter_xy = rng.uniform(0, 200, (int(rng.integers(0, 4)), 2))
        clutter = np.column_stack([clutter_xy, clutter_xy + rng.uniform(4, 40, (len(clutter_xy), 2))])
        found = np.concatenate([hits, halves, clutter]) if index != 2 else np.zeros((0, 4))
        scores = rng.uniform(0.05, 0.95, len(found))
        if index == 0 and len(found):
            scores[0] = 0.99  # the top score in an image with faces: the port divides 0 by 0 otherwise
        order = np.argsort(-scores)
        predictions[file] = np.column_stack([found, scores])[order]
    return boxes, subsets, predictions


@pytest.mark.parametrize("seed", range(12))
def test_the_official_port_and_stride_agree_on_random_sets(tmp_path, seed):
    boxes, subsets, predictions = random_set(np.random.default_rng(seed), images=12)
    write_wider_eval(tmp_path / "gt", boxes, subsets)
    write_prediction_files(tmp_path / "pred", predictions)
    port = evaluate(tmp_path / "pred", tmp_path / "gt")

    truth, found = read_wider_eval(tmp_path / "gt"), read_prediction_files(tmp_path / "pred")
    files = list(truth)
    faces = [np.column_stack([truth[f].boxes[:, :2], truth[f].boxes[:, :2] + truth[f].boxes[:, 2:]]) for f in files]
    for subset in SUBSETS:
        ours = wider_face_ap([found[f] for f in files], faces, [truth[f].subsets[subset] for f in files]).ap
        assert ours == pytest.approx(port[subset], abs=1e-12), subset
    assert 0 < port["hard"] < 1  # neither trivial nor empty
