"""WIDER FACE AP on hand-computed cases, and the prediction files of the official tools.

Most cases use num_thresholds=10 (thresholds 0.9, 0.8, ..., 0.0) and scores whose normalisation is
exact (min 0, max 1), with scores half-way between thresholds, so the curves can be written down.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from stride.errors import StrideError
from stride.metrics.detection_ap import average_precision, read_prediction_files, wider_face_ap, write_prediction_files

FACE_A, FACE_B, FACE_C = [0, 0, 10, 10], [100, 100, 120, 130], [200, 0, 240, 40]
FAR_AWAY = [500, 500, 510, 510]


def boxes(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 5 if rows and len(rows[0]) == 5 else 4)


def test_perfect_detections_give_ap_one():
    # every prediction recalls a new face: precision 1 at every threshold, recall reaches 1
    truth = [boxes(FACE_A, FACE_B), boxes(FACE_C)]
    found = [boxes([*FACE_A, 0.9], [*FACE_B, 0.2]), boxes([*FACE_C, 0.6])]
    result = wider_face_ap(found, truth)
    assert result.ap == pytest.approx(1.0)
    assert (result.num_faces, result.num_predictions) == (3, 3)
    assert result.recall[-1] == 1.0 and np.all(result.precision[result.recall > 0] == 1.0)
    assert average_precision(found, truth) == result.ap


def test_predictions_that_overlap_less_than_half_give_ap_zero():
    # [0,0,10,4] on [0,0,10,10]: (11*5) / (11*11) = 0.45 < 0.5 with the official +1 pixels
    result = wider_face_ap([boxes([0, 0, 10, 4, 0.9], [*FAR_AWAY, 0.1])], [boxes(FACE_A)])
    assert result.ap == 0.0 and np.all(result.recall == 0)


def test_duplicates_lower_precision_hand_computed():
    # A 1.0, A again 0.5 (duplicate: FP), B 0.0; faces A, B.
    # t 0.9-0.6: 1 proposal, 1 recalled -> P 1,   R .5
    # t 0.5-0.1: 2 proposals, 1 recalled -> P .5,  R .5
    # t 0.0:     3 proposals, 2 recalled -> P 2/3, R 1
    # envelope: 1 up to R .5, then 2/3 -> AP = .5 * 1 + .5 * 2/3 = 5/6
    found = [boxes([*FACE_A, 1.0], [*FACE_A, 0.5], [*FACE_B, 0.0])]
    result = wider_face_ap(found, [boxes(FACE_A, FACE_B)], num_thresholds=10)
    np.testing.assert_allclose(result.precision, [1] * 4 + [0.5] * 5 + [2 / 3])
    np.testing.assert_allclose(result.recall, [0.5] * 9 + [1])
    assert result.ap == pytest.approx(5 / 6)


def test_predictions_on_ignored_faces_are_neither_tp_nor_fp():
    # faces A (kept) and B (outside the subset); predictions B 1.0 (ignored), far away 0.45 (FP), A 0.0
    # t 0.9-0.5: no proposal -> P 0, R 0;  t 0.4-0.1: 1 proposal (FP) -> P 0, R 0
    # t 0.0: 2 proposals, 1 recalled -> P .5, R 1  -> AP = .5  (B counted as FP would give 1/3)
    found = [boxes([*FACE_B, 1.0], [*FAR_AWAY, 0.45], [*FACE_A, 0.0])]
    result = wider_face_ap(found, [boxes(FACE_A, FACE_B)], [np.array([True, False])], num_thresholds=10)
    assert result.num_faces == 1 and result.num_predictions == 3
    np.testing.assert_allclose(result.precision, [0] * 9 + [0.5])
    assert result.ap == pytest.approx(0.5)


INTERLEAVED_TRUTH = [boxes(FACE_A, FACE_C), boxes(FACE_B)]
INTERLEAVED_FOUND = [boxes([*FACE_A, 1.0], [*FAR_AWAY, 0.45], [*FACE_C, 0.0]),
                     boxes([*FAR_AWAY, 0.75], [*FACE_B, 0.25])]


def test_two_images_with_interleaved_scores_hand_computed():
    # image 1: A 1.0, FP .45, C 0.0; image 2: FP .75, B .25; 3 faces. Proposals / recalled over both:
    # t .9 .8: 1/1 -> P 1, R 1/3;  t .7 .6 .5: 2/1 -> P .5, R 1/3;  t .4 .3: 3/1 -> P 1/3, R 1/3
    # t .2 .1: 4/2 -> P .5, R 2/3;  t 0: 5/3 -> P .6, R 1
    # envelope at the first point of each recall level: 1, .6, .6 -> AP = (1 + .6 + .6) / 3 = 11/15
    result = wider_face_ap(INTERLEAVED_FOUND, INTERLEAVED_TRUTH, num_thresholds=10)
    np.testing.assert_allclose(result.precision, [1, 1, .5, .5, .5, 1 / 3, 1 / 3, .5, .5, .6])
    np.testing.assert_allclose(result.recall, [1 / 3] * 7 + [2 / 3] * 2 + [1])
    np.testing.assert_allclose(result.thresholds, np.linspace(0.9, 0, 10), atol=1e-12)
    assert result.ap == pytest.approx(11 / 15)


def test_order_of_predictions_in_an_image_does_not_matter():
    shuffled = [found[::-1].copy() for found in INTERLEAVED_FOUND]
    assert wider_face_ap(shuffled, INTERLEAVED_TRUTH, num_thresholds=10).ap == pytest.approx(11 / 15)


@pytest.mark.parametrize("num_thresholds", [10, 1000])
def test_score_normalisation_makes_ap_invariant_to_affine_scores(num_thresholds):
    # scores off both threshold grids, where rounding could move a score across a threshold
    off_grid = [np.column_stack([f[:, :4], f[:, 4] + s]) for f, s in
                zip(INTERLEAVED_FOUND, ([0, 0.0012, 0], [0.0031, 0.0007]))]
    reference = wider_face_ap(off_grid, INTERLEAVED_TRUTH, num_thresholds=num_thresholds)
    moved = [np.column_stack([f[:, :4], 3.0 * f[:, 4] - 7.0]) for f in off_grid]
    result = wider_face_ap(moved, INTERLEAVED_TRUTH, num_thresholds=num_thresholds)
    assert result.ap == pytest.approx(reference.ap)
    np.testing.assert_allclose(result.precision, reference.precision)


def test_iou_boundary_and_pixel_convention():
    # +1 pixels: [0,0,9,9] is 10x10 = 100, [0,0,9,4] is 10x5 = 50 inside it: IoU exactly .5 -> recalled;
    # [0,0,9,3.99] is 49.9 -> missed; without the +1 (pixel_offset=0): 45 / 81 < .5 -> missed
    truth = [boxes([0, 0, 9, 9])]
    assert average_precision([boxes([0, 0, 9, 4, 0.7])], truth) == pytest.approx(1.0)
    assert average_precision([boxes([0, 0, 9, 3.99, 0.7])], truth) == 0.0
    assert wider_face_ap([boxes([0, 0, 9, 4, 0.7])], truth, pixel_offset=0).ap == 0.0


def test_edge_cases_empty_sets_equal_scores_and_faceless_images():
    truth = [boxes(FACE_A, FACE_B)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero anywhere
        assert wider_face_ap([boxes()], truth).ap == 0.0  # no predictions
        assert math.isnan(wider_face_ap([boxes([*FACE_A, 1.0])], truth, [np.zeros(2, bool)]).ap)  # no kept face
        # equal scores all normalise to 1: P .5, R .5 at every threshold -> AP .25
        assert wider_face_ap([boxes([*FACE_A, 0.3], [*FAR_AWAY, 0.3])], truth).ap == pytest.approx(0.25)
        # an image without faces is skipped as the tools do (A 1.0, B 0.0: P 1 throughout -> AP 1), unless
        # asked to score it: its box at .45 is an FP before B is found -> AP 5/6 as in the duplicates case
        found = [boxes([*FACE_A, 1.0], [*FACE_B, 0.0]), boxes([*FAR_AWAY, 0.45])]
        assert wider_face_ap(found, truth + [boxes()], num_thresholds=10).ap == pytest.approx(1.0)
        assert wider_face_ap(found, truth + [boxes()], num_thresholds=10,
                             score_faceless_images=True).ap == pytest.approx(5 / 6)
    with pytest.raises(StrideError, match="one of each per image"):
        wider_face_ap([boxes()], truth + truth)
    with pytest.raises(StrideError, match=r"keep\[0\] has 1 flags for 2 faces"):
        wider_face_ap([boxes()], truth, [np.ones(1, bool)])


def test_prediction_files_round_trip_in_the_official_layout(tmp_path):
    predictions = {"0--Parade/0_Parade_marchingband_1_20.jpg": boxes([10, 20, 30, 60, 0.9], [1.5, 2, 4, 8, 0.25]),
                   "12--Group/12_Group_Group_12_Group_Group_12_10.jpg": np.zeros((0, 5))}
    written = write_prediction_files(tmp_path, predictions)
    assert written[0] == tmp_path / "0--Parade" / "0_Parade_marchingband_1_20.txt"
    assert written[0].read_text().splitlines() == ["0_Parade_marchingband_1_20", "2",
                                                   "10.0 20.0 20.0 40.0 0.9", "1.5 2.0 2.5 6.0 0.25"]
    assert written[1].read_text() == "12_Group_Group_12_Group_Group_12_10\n0\n"
    back = read_prediction_files(tmp_path)
    assert set(back) == set(predictions)
    for key, found in predictions.items():
        np.testing.assert_allclose(back[key], found)


@pytest.mark.parametrize("key", ["../escape.jpg", "/abs/olute.jpg", "noevent.jpg", "a/b/c.jpg", ".hidden/x.jpg"])
def test_unsafe_prediction_keys_are_refused(tmp_path, key):
    with pytest.raises(StrideError):
        write_prediction_files(tmp_path / "out", {key: boxes([*FACE_A, 1.0])})
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("text, where", [("name\n", "line 2"), ("name\nmany\n", "line 2"),
                                         ("name\n2\n1 2 3 4 0.5\n", "line 2: says 2 boxes"),
                                         ("name\n1\n1 2 3 four 0.5\n", "line 3"),
                                         ("name\n2\n1 2 3 4 0.5\n1 2 3 4\n", "line 4")])
def test_malformed_prediction_files_name_the_file_and_line(tmp_path, text, where):
    (tmp_path / "0--Parade").mkdir()
    (tmp_path / "0--Parade" / "broken.txt").write_text(text)
    with pytest.raises(StrideError, match=rf"broken\.txt {where}"):
        read_prediction_files(tmp_path)
    with pytest.raises(StrideError, match="does not exist"):
        read_prediction_files(tmp_path / "missing")
