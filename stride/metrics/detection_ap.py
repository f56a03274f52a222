"""Face detection AP the WIDER FACE way (docs/models.md, A3), and the files its official tools read.

This is the protocol of the official evaluation tools (MATLAB `wider_eval.m`/`evaluation.m` and
their Python port `evaluation.py`), so numbers compare with published ones:
- scores are min-max normalised over the whole set (the tools start min at 1 and max at 0, which
  changes nothing for scores in [0, 1]; here the true extremes, so any affine score works), then
  thresholded at t_k = 1 - (k+1)/K;
- per image, predictions in descending score order each take the face they overlap most; at
  IoU >= threshold a face outside the subset makes the prediction ignored (neither TP nor FP),
  a face not yet recalled becomes recalled, a recalled one makes it a duplicate (FP);
- precision and recall add up over images at each threshold; AP is VOC's all-point AP.
IoU counts pixels inclusively, `(x2 - x1 + 1) * (y2 - y1 + 1)`, as the tools' `boxoverlap` and
`bbox_overlaps` do (`pixel_offset=1`); with x2 = x + w that makes a w-wide box w + 1 pixels.
Like the tools, images without any ground-truth box are skipped: detections there are no FP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from stride.errors import StrideError
from stride.names import inside, is_plain_relative, plain_name


@dataclass(frozen=True)
class APResult:
    """AP and the curve behind it: `precision[k]`, `recall[k]` at score threshold `thresholds[k]`.

    `ap` is nan when no face is kept (nothing to find: recall is undefined, and 0 would read as a
    bad detector). `num_predictions` counts every prediction given, scored or not.
    """

    ap: float
    precision: np.ndarray
    recall: np.ndarray
    num_faces: int
    num_predictions: int

    @property
    def thresholds(self) -> np.ndarray:
        return score_thresholds(len(self.precision))


def score_thresholds(num_thresholds: int) -> np.ndarray:
    """The tools' thresholds on normalised scores, decreasing from 1 - 1/K to 0."""
    return 1.0 - (np.arange(num_thresholds) + 1) / num_thresholds


def box_iou(boxes: np.ndarray, others: np.ndarray, pixel_offset: float = 1.0) -> np.ndarray:
    """IoU matrix (n, m) of x1y1x2y2 boxes; `pixel_offset=1` counts the last pixel row as inside."""
    width = np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(boxes[:, None, 0], others[None, :, 0])
    height = np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(boxes[:, None, 1], others[None, :, 1])
    inter = np.clip(width + pixel_offset, 0, None) * np.clip(height + pixel_offset, 0, None)

    def area(b: np.ndarray) -> np.ndarray:
        return (b[:, 2] - b[:, 0] + pixel_offset) * (b[:, 3] - b[:, 1] + pixel_offset)

    union = area(boxes)[:, None] + area(others)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _image_pr(predictions: np.ndarray, truth: np.ndarray, kept: np.ndarray, thresholds: np.ndarray,
              iou_threshold: float, pixel_offset: float) -> np.ndarray:
    """(K, 2): proposals (not ignored) and recalled kept faces among predictions scoring >= t_k."""
    predictions = predictions[np.argsort(-predictions[:, 4], kind="stable")]
    count = len(predictions)
    face, matched, ignored = np.zeros(count, dtype=int), np.zeros(count, dtype=bool), np.zeros(count, dtype=bool)
    if len(truth):
        overlaps = box_iou(predictions[:, :4], truth, pixel_offset)
        face, matched = overlaps.argmax(axis=1), overlaps.max(axis=1) >= iou_threshold
        ignored = matched & ~kept[face]
    hits = np.flatnonzero(matched & ~ignored)
    recalls = np.zeros(len(predictions))
    recalls[hits[np.unique(face[hits], return_index=True)[1]]] = 1  # the first hit recalls, later ones are FP
    cumulative = np.stack([np.cumsum(~ignored), np.cumsum(recalls)], axis=1)
    above = np.searchsorted(-predictions[:, 4], -thresholds, side="right")  # how many score >= t
    return np.where(above[:, None] > 0, cumulative[np.maximum(above - 1, 0)], 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP: the area under the precision envelope, between sentinels at recall 0 and 1."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _checked(arrays: Sequence[np.ndarray], columns: int, what: str) -> list[np.ndarray]:
    checked = [np.asarray(a, dtype=np.float64).reshape(-1, columns) if np.size(a) == 0 else
               np.asarray(a, dtype=np.float64) for a in arrays]
    for index, array in enumerate(checked):
        if array.ndim != 2 or array.shape[1] != columns:
            raise StrideError(f"{what}[{index}] has shape {list(array.shape)}, expected (n, {columns})")
    return checked


def wider_face_ap(predictions: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray],
                  keep: Sequence[np.ndarray] | None = None, *, iou_threshold: float = 0.5,
                  num_thresholds: int = 1000, pixel_offset: float = 1.0,
                  score_faceless_images: bool = False) -> APResult:
    """WIDER FACE AP of per-image (n, 5) x1y1x2y2-score predictions against (m, 4) x1y1x2y2 faces.

    `keep[i]` marks the faces of image i in the subset (easy/medium/hard); the others are ignored.
    `score_faceless_images=True` counts detections on images without faces as FP (the tools skip them).
    """
    predictions, ground_truth = _checked(predictions, 5, "predictions"), _checked(ground_truth, 4, "ground_truth")
    if len(predictions) != len(ground_truth) or (keep is not None and len(keep) != len(ground_truth)):
        raise StrideError(f"{len(predictions)} prediction arrays, {len(ground_truth)} ground-truth arrays and "
                          f"{'no' if keep is None else len(keep)} keep masks: expected one of each per image")
    kept = [np.ones(len(t), bool) for t in ground_truth] if keep is None else \
        [np.asarray(k, dtype=bool).reshape(-1) for k in keep]
    for index, (mask, truth) in enumerate(zip(kept, ground_truth)):
        if len(mask) != len(truth):
            raise StrideError(f"keep[{index}] has {len(mask)} flags for {len(truth)} faces")
    scores = np.concatenate([p[:, 4] for p in predictions]) if predictions else np.zeros(0)
    low, high = (scores.min(), scores.max()) if len(scores) else (0.0, 1.0)
    thresholds = score_thresholds(num_thresholds)
    totals = np.zeros((num_thresholds, 2))
    for found, truth, mask in zip(predictions, ground_truth, kept):
        if len(found) and (len(truth) or score_faceless_images):
            # equal scores (where the tools divide 0 by 0) all normalise to 1: counted at every threshold
            normalised = (found[:, 4] - low) / (high - low) if high > low else np.ones(len(found))
            totals += _image_pr(np.column_stack([found[:, :4], normalised]), truth, mask, thresholds,
                                iou_threshold, pixel_offset)
    num_faces = int(sum(mask.sum() for mask in kept))
    precision = np.divide(totals[:, 1], totals[:, 0], out=np.zeros(num_thresholds), where=totals[:, 0] > 0)
    recall = totals[:, 1] / num_faces if num_faces else np.zeros(num_thresholds)
    ap = voc_ap(recall, precision) if num_faces else math.nan
    return APResult(ap, precision, recall, num_faces, len(scores))


def average_precision(predictions: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray],
                      iou_threshold: float = 0.5) -> float:
    """WIDER FACE AP with every face kept."""
    return wider_face_ap(predictions, ground_truth, iou_threshold=iou_threshold).ap


def _event_and_name(key: str) -> tuple[str, str]:
    """("<event>", "<name>") of a WIDER relative path "<event>/<name>.jpg", refusing any other shape."""
    parts = key.split("/")
    if not is_plain_relative(key) or len(parts) != 2:
        raise StrideError(f"prediction key {key!r} is not a WIDER relative path '<event>/<name>.jpg'")
    return plain_name(parts[0], "event folder"), plain_name(PurePosixPath(parts[1]).stem, "image name")


def write_prediction_files(folder: str | Path, predictions: Mapping[str, np.ndarray]) -> list[Path]:
    """`<folder>/<event>/<name>.txt` per image as the official tools read it: the image name (no .jpg,
    which both tools accept), the box count, then one `x y w h score` line per box."""
    folder, written = Path(folder), []
    for key, boxes in predictions.items():
        event, name = _event_and_name(key)
        boxes = _checked([boxes], 5, f"predictions for {key}: boxes")[0]
        rows = np.column_stack([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2], boxes[:, 4]])
        path = inside(folder, folder / event / f"{name}.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [name, str(len(rows))] + [" ".join(repr(float(v)) for v in row) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _read_prediction_file(path: Path) -> np.ndarray:
    """x1y1x2y2-score rows of one `<name>.txt`; the name line is not used (as in the MATLAB tool)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    try:
        count = int(lines[1])
    except (IndexError, ValueError):
        raise StrideError(f"{path} line 2: expected the number of boxes, found "
                          f"{lines[1] if len(lines) > 1 else 'end of file'!r}") from None
    if count != len(lines) - 2:
        raise StrideError(f"{path} line 2: says {count} boxes, the file has {len(lines) - 2} box lines")
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            values = []
        if len(values) != 5 or not all(math.isfinite(v) for v in values):
            raise StrideError(f"{path} line {number}: expected 5 numbers 'x y w h score', found {line!r}")
        rows.append(values)
    xywh = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4], xywh[:, 4]])


def read_prediction_files(folder: str | Path) -> dict[str, np.ndarray]:
    """The official layout `<folder>/<event>/<name>.txt` back as {"<event>/<name>.jpg": (n, 5) x1y1x2y2-score}."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StrideError(f"prediction folder {folder} does not exist (expected <event>/<name>.txt files)")
    return {f"{path.parent.name}/{path.stem}.jpg": _read_prediction_file(path)
            for path in sorted(folder.glob("*/*.txt"))}
