"""WIDER FACE's official evaluation files: `wider_face_val.mat` and `wider_{easy,medium,hard}_val.mat`.

The official evaluation (eval_tools/ of http://shuoyang1213.me/WIDERFACE/) scores the WIDER_val
images against these MATLAB v5 files; each holds cell arrays indexed by event, then image:

- `event_list`: E x 1 cell of event names (`0--Parade`);
- `file_list`: E x 1 cell, each an n x 1 cell of image names without `.jpg`;
- `face_bbx_list`: E x 1 cell, each an n x 1 cell of m x 4 double boxes x, y, w, h;
- `gt_list` (the three subset files only): E x 1 cell, each an n x 1 cell of k x 1 one-based integer indices
  of the faces that count in that difficulty subset (the other faces are ignored, neither hits nor misses).

scipy.io reads a cell as a numpy object array (and writes an object array as a cell), so
`file_list[e, 0][i, 0]` is one name, as the official Python ports of the evaluation read it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from stride.errors import StrideError

FACES_FILE = "wider_face_val.mat"
SUBSET_FILES = {"easy": "wider_easy_val.mat", "medium": "wider_medium_val.mat", "hard": "wider_hard_val.mat"}
EVAL_FILES = (FACES_FILE, *SUBSET_FILES.values())
HEADER_BYTES = 116  # the text at the start of a MATLAB v5 file; scipy writes the time into it
HEADER_TEXT = b"MATLAB 5.0 MAT-file, WIDER FACE evaluation ground truth written by stride"


@dataclass(frozen=True)
class EvalFaces:
    """One image of the evaluation files: its boxes and which of them each subset counts."""

    boxes: np.ndarray  # float64 (m, 4) x, y, w, h
    subsets: dict[str, np.ndarray]  # subset -> bool (m,)


# -- reading -----------------------------------------------------------------------------------

def _described(value: Any) -> str:
    return f"{type(value).__name__} {getattr(value, 'dtype', '')} of shape {getattr(value, 'shape', None)}"


def _cells(value: Any, where: str, length: int | None = None) -> list[Any]:
    """The elements of a cell array read by scipy (an object array of shape (n, 1), (1, n) or (n,))."""
    if not isinstance(value, np.ndarray) or value.dtype != object or (value.ndim == 2 and 1 not in value.shape) \
            or value.ndim > 2:
        raise StrideError(f"{where}: expected a cell array with one column (read as an object array), found "
                          f"{_described(value)}")
    items = list(value.reshape(-1))
    if length is not None and len(items) != length:
        raise StrideError(f"{where}: {len(items)} entries, expected {length} (one per event or image)")
    return items


def _text(value: Any, where: str) -> str:
    """A MATLAB char array as scipy reads it: array(['name']) or a plain str."""
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "US" and value.size == 1:
        item = value.reshape(-1)[0]
        return item.decode("utf-8") if isinstance(item, bytes) else str(item)
    raise StrideError(f"{where}: expected a name (a char array), found {_described(value)}")


def _numbers(value: Any, where: str, columns: int) -> np.ndarray:
    """An m x `columns` numeric matrix (a list of indices, `columns` 1, may also be a row)."""
    shaped = isinstance(value, np.ndarray) and value.dtype.kind in "iuf" and value.ndim <= 2 and (
        not value.size or (value.shape[-1] == columns if columns > 1 else 1 in value.shape))
    if not shaped:
        raise StrideError(f"{where}: expected a numeric matrix with {columns} column(s), found {_described(value)}")
    return value.reshape(-1, columns).astype(np.float64)


def _load(where: str, opened: str | Path | BinaryIO, variables: tuple[str, ...]) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        mat = loadmat(opened)
    except Exception as err:  # scipy raises ValueError, OSError, TypeError, ... on damaged or non-MATLAB files
        raise StrideError(f"{where}: cannot read as a MATLAB v5 file ({type(err).__name__}: {err}); expected the "
                          "official WIDER FACE evaluation file") from None
    if missing := [name for name in variables if name not in mat]:
        found = sorted(key for key in mat if not key.startswith("__"))
        raise StrideError(f"{where}: missing variable(s) {', '.join(missing)} (holds {', '.join(found) or 'none'}); "
                          f"expected {', '.join(variables)}")
    return mat


def _file_names(mat: dict[str, Any], where: str) -> list[str]:
    """`<event>/<name>.jpg` of every image, events in file order."""
    events = _cells(mat["event_list"], f"{where}: event_list")
    per_event = _cells(mat["file_list"], f"{where}: file_list", len(events))
    files = []
    for e, (event, names) in enumerate(zip(events, per_event)):
        event_name = _text(event, f"{where}: event_list[{e}]")
        for i, name in enumerate(_cells(names, f"{where}: file_list[{e}]")):
            files.append(f"{event_name}/{_text(name, f'{where}: file_list[{e}][{i}]')}.jpg")
    return files


def _per_image(mat: dict[str, Any], variable: str, where: str, counts: list[int]) -> list[Any]:
    """The elements of `variable` (E x 1 cell of n x 1 cells), flattened in image order."""
    per_event = _cells(mat[variable], f"{where}: {variable}", len(counts))
    return [item for e, (cell, count) in enumerate(zip(per_event, counts))
            for item in _cells(cell, f"{where}: {variable}[{e}]", count)]


def _event_counts(mat: dict[str, Any], where: str) -> list[int]:
    return [len(_cells(names, f"{where}: file_list[{e}]")) for e, names in
            enumerate(_cells(mat["file_list"], f"{where}: file_list"))]


Location = str | Path | Mapping[str, str | Path | tuple[str, BinaryIO]]


def _opened(location: Location) -> dict[str, tuple[str, str | Path | BinaryIO]]:
    """Official file name -> (how errors name it, what scipy reads)."""
    if isinstance(location, Mapping):
        return {name: value if isinstance(value, tuple) else (str(value), value) for name, value in location.items()}
    folder = Path(location)
    if not folder.is_dir():
        raise StrideError(f"{folder}: not a folder; expected one holding {', '.join(EVAL_FILES)}")
    return {name: (str(folder / name), folder / name) for name in EVAL_FILES if (folder / name).is_file()}


def read_wider_eval(location: Location) -> dict[str, EvalFaces]:
    """`<event>/<name>.jpg` -> its evaluation boxes and subset membership, in the files' order.

    `location` is a folder holding the four files, or a mapping of official file name to a path
    or to (how errors name it, a binary file object). The subset files must list the images of
    `wider_face_val.mat` in its order; their indices refer to its boxes.
    """
    files = _opened(location)
    if missing := [name for name in EVAL_FILES if name not in files]:
        raise StrideError(f"{location}: missing {', '.join(missing)}; the WIDER FACE evaluation needs all of "
                          f"{', '.join(EVAL_FILES)}")
    where, opened = files[FACES_FILE]
    mat = _load(where, opened, ("event_list", "file_list", "face_bbx_list"))
    names = _file_names(mat, where)
    boxes = [_numbers(b, f"{where}: face_bbx_list image {names[i]}", 4)
             for i, b in enumerate(_per_image(mat, "face_bbx_list", where, _event_counts(mat, where)))]
    subsets: dict[str, list[np.ndarray]] = {}
    for subset, file in SUBSET_FILES.items():
        subset_where, subset_opened = files[file]
        subset_mat = _load(subset_where, subset_opened, ("event_list", "file_list", "gt_list"))
        subset_names = _file_names(subset_mat, subset_where)
        if subset_names != names:
            first = next((i for i, (a, b) in enumerate(zip(subset_names, names)) if a != b),
                         min(len(names), len(subset_names)))
            raise StrideError(f"{subset_where} and {where} list different images (from image {first}: "
                              f"{subset_names[first:first + 1] or 'none'} vs {names[first:first + 1] or 'none'}); "
                              "expected the same events and files in the same order")
        masks = []
        for index, kept in enumerate(_per_image(subset_mat, "gt_list", subset_where, _event_counts(mat, where))):
            indices = _numbers(kept, f"{subset_where}: gt_list image {names[index]}", 1)[:, 0]
            count = len(boxes[index])
            if indices.size and (np.any(indices != np.round(indices)) or indices.min() < 1 or indices.max() > count):
                raise StrideError(f"{subset_where}: gt_list image {names[index]} holds face indices "
                                  f"{indices.astype(int).tolist()}; expected one-based indices 1..{count} "
                                  f"(the image has {count} faces in {where})")
            mask = np.zeros(count, dtype=bool)
            mask[indices.astype(np.int64) - 1] = True
            masks.append(mask)
        subsets[subset] = masks
    return {name: EvalFaces(boxes[i], {subset: masks[i] for subset, masks in subsets.items()})
            for i, name in enumerate(names)}


# -- writing -----------------------------------------------------------------------------------

def _cell(items: Sequence[Any]) -> np.ndarray:
    cell = np.empty((len(items), 1), dtype=object)
    for index, item in enumerate(items):
        cell[index, 0] = item
    return cell


def _save(path: Path, variables: dict[str, np.ndarray]) -> None:
    """savemat with a fixed header text instead of the time, so that the same data gives the same bytes."""
    from scipy.io import savemat

    buffer = io.BytesIO()
    savemat(buffer, variables)
    data = bytearray(buffer.getvalue())
    data[:HEADER_BYTES] = HEADER_TEXT.ljust(HEADER_BYTES, b" ")
    path.write_bytes(bytes(data))


def write_wider_eval(folder: str | Path, boxes: Mapping[str, np.ndarray],
                     subsets: Mapping[str, Mapping[str, Sequence[bool]]]) -> list[Path]:
    """Write the four official files into `folder` (created); returns their paths.

    `boxes` maps `<event>/<name>.jpg` to its (m, 4) x, y, w, h boxes (events are listed in order
    of first appearance); `subsets` maps "easy", "medium" and "hard" to file -> bool per face.
    """
    if sorted(subsets) != sorted(SUBSET_FILES):
        raise ValueError(f"subsets must be exactly {', '.join(SUBSET_FILES)}, got {', '.join(subsets)}")
    events: dict[str, list[str]] = {}
    for file in boxes:
        event, _, name = file.partition("/")
        if not name.endswith(".jpg") or "/" in name:
            raise ValueError(f"{file!r} is not <event>/<name>.jpg")
        events.setdefault(event, []).append(file)
    matrices = {file: np.asarray(value, dtype=np.float64).reshape(-1, 4) for file, value in boxes.items()}
    listed = {"event_list": _cell(list(events)),
              "file_list": _cell([_cell([file.split("/", 1)[1][:-len(".jpg")] for file in files])
                                  for files in events.values()]),
              "face_bbx_list": _cell([_cell([matrices[file] for file in files]) for files in events.values()])}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save(folder / FACES_FILE, listed)
    for subset, file_name in SUBSET_FILES.items():
        def indices(file: str, subset: str = subset) -> np.ndarray:
            mask = np.asarray(subsets[subset][file], dtype=bool)
            if mask.shape != (len(matrices[file]),):
                raise ValueError(f"subset {subset}, {file}: {mask.shape[0]} flags for {len(matrices[file])} faces")
            # integers: the Python ports of the official evaluation (RetinaFace's widerface_evaluate) index
            # with them (`ignore[keep_index - 1] = 1`), which numpy refuses for floats
            return (np.flatnonzero(mask) + 1).astype(np.uint16).reshape(-1, 1)
        gt_list = _cell([_cell([indices(file) for file in files]) for files in events.values()])
        _save(folder / file_name, {**listed, "gt_list": gt_list})
    return [folder / name for name in EVAL_FILES]
