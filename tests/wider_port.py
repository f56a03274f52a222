"""The widely used Python port of the official WIDER FACE evaluation (wondervictor's WiderFace-Evaluation, shipped
in RetinaFace's `widerface_evaluate`), written out step by step as an independent reference for stride's AP.

It reads exactly what the port reads: the four ground-truth `.mat` files through `scipy.io.loadmat` (cells
indexed as the port indexes them, `ignore[keep_index - 1] = 1`) and the `<event>/<name>.txt` prediction files
(name line, count line, `x y w h score` lines). Scores are min-max normalised over every prediction; each image
adds its proposal and recall counts at 1,000 thresholds; AP is VOC's all-point area. Like the port, it assumes
each file lists its boxes by descending score (it counts the boxes up to the last one above each threshold).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import loadmat

THRESHOLDS = 1000
SUBSETS = ("easy", "medium", "hard")


def overlaps(boxes: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """IoU of x1y1x2y2 boxes with the tools' +1 pixel areas, as the port's Cython `bbox_overlaps`."""
    table = np.zeros((len(boxes), len(faces)))
    for k, face in enumerate(faces):
        face_area = (face[2] - face[0] + 1) * (face[3] - face[1] + 1)
        for n, box in enumerate(boxes):
            width = min(box[2], face[2]) - max(box[0], face[0]) + 1
            height = min(box[3], face[3]) - max(box[1], face[1]) + 1
            if width > 0 and height > 0:
                union = (box[2] - box[0] + 1) * (box[3] - box[1] + 1) + face_area - width * height
                table[n, k] = width * height / union
    return table


def read_predictions(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """event -> image name -> (n, 5) x y w h score rows; the name comes from the file's first line."""
    events: dict[str, dict[str, np.ndarray]] = {}
    for event in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(event.glob("*.txt")):
            lines = path.read_text().splitlines()
            rows = [[float(v) for v in line.split()] for line in lines[2:] if line.strip()]
            name = lines[0].strip().split("/")[-1]
            name = name[:-len(".jpg")] if name.endswith(".jpg") else name
            events.setdefault(event.name, {})[name] = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return events


def normalise_scores(predictions: dict[str, dict[str, np.ndarray]]) -> None:
    scores = np.concatenate([boxes[:, 4] for images in predictions.values() for boxes in images.values()])
    low, high = scores.min(), scores.max()
    for images in predictions.values():
        for boxes in images.values():
            boxes[:, 4] = (boxes[:, 4] - low) / (high - low)


def image_recall(predictions: np.ndarray, faces: np.ndarray, ignore: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction (in file order): faces recalled so far, and 1 unless it matched an ignored face (-1)."""
    boxes, truth = predictions[:, :4].copy(), faces.copy()
    boxes[:, 2:] += boxes[:, :2]
    truth[:, 2:] += truth[:, :2]
    table = overlaps(boxes, truth)
    recalled, counted = np.zeros(len(truth)), np.ones(len(boxes))
    recall_so_far = np.zeros(len(boxes))
    for h in range(len(boxes)):
        best = table[h].argmax()
        if table[h, best] >= 0.5:
            if ignore[best] == 0:
                recalled[best], counted[h] = -1, -1
            elif recalled[best] == 0:
                recalled[best] = 1
        recall_so_far[h] = np.count_nonzero(recalled == 1)
    return recall_so_far, counted


def image_pr(predictions: np.ndarray, counted: np.ndarray, recall_so_far: np.ndarray) -> np.ndarray:
    table = np.zeros((THRESHOLDS, 2))
    for t in range(THRESHOLDS):
        above = np.flatnonzero(predictions[:, 4] >= 1 - (t + 1) / THRESHOLDS)
        if len(above):
            last = above[-1]
            table[t] = np.count_nonzero(counted[:last + 1] == 1), recall_so_far[last]
    return table


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(precision) - 1, 0, -1):
        precision[i - 1] = max(precision[i - 1], precision[i])
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def evaluate(predictions_dir: str | Path, ground_truth_dir: str | Path) -> dict[str, float]:
    """{"easy": AP, "medium": AP, "hard": AP}, as the port prints them."""
    ground_truth_dir = Path(ground_truth_dir)
    faces_mat = loadmat(str(ground_truth_dir / "wider_face_val.mat"))
    events, files, face_boxes = faces_mat["event_list"], faces_mat["file_list"], faces_mat["face_bbx_list"]
    predictions = read_predictions(Path(predictions_dir))
    normalise_scores(predictions)
    aps = {}
    for subset in SUBSETS:
        kept_lists = loadmat(str(ground_truth_dir / f"wider_{subset}_val.mat"))["gt_list"]
        totals, num_faces = np.zeros((THRESHOLDS, 2)), 0
        for i in range(len(events)):
            event_predictions = predictions[str(events[i][0][0])]
            names, kept, boxes = files[i][0], kept_lists[i][0], face_boxes[i][0]
            for j in range(len(names)):
                found = event_predictions[str(names[j][0][0])]
                faces = boxes[j][0].astype("float")
                keep_index = kept[j][0]
                num_faces += len(keep_index)
                if len(faces) == 0 or len(found) == 0:
                    continue
                ignore = np.zeros(faces.shape[0])
                if len(keep_index) != 0:
                    ignore[keep_index - 1] = 1
                recall_so_far, counted = image_recall(found, faces, ignore)
                totals += image_pr(found, counted, recall_so_far)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = totals[:, 1] / totals[:, 0]
        aps[subset] = voc_ap(totals[:, 1] / num_faces, precision)
    return aps
