"""Write a small LFW exactly as distributed: `lfw/name/name_NNNN.jpg` (250 x 250 JPEGs, here flat colours), optionally
packed as `lfw.tgz`, and a View 2 `pairs.txt` (tab-separated: "FOLDS PAIRS", then per fold the matched lines
"name n1 n2" and the mismatched lines "name1 n1 name2 n2")."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

# people in pairs.txt (two folds of 3 matched + 3 mismatched pairs), and people it never names
PAIRED = {"Ann_Archer": 3, "Bob_Brown": 2, "Cy_Chen": 2, "Dee_Dao": 1, "Eve_Ek": 2, "Flo_Fay": 1}
UNPAIRED = {"Gus_Gil": 4, "Hal_Ho": 3, "Ida_Ito": 2, "Jo_Jung": 2, "Kim_Kay": 1}
MATCHED = [[("Ann_Archer", 1, 2), ("Bob_Brown", 1, 2), ("Ann_Archer", 1, 3)],
           [("Cy_Chen", 1, 2), ("Eve_Ek", 1, 2), ("Ann_Archer", 2, 3)]]
MISMATCHED = [[("Ann_Archer", 1, "Dee_Dao", 1), ("Bob_Brown", 2, "Flo_Fay", 1), ("Cy_Chen", 1, "Dee_Dao", 1)],
              [("Eve_Ek", 2, "Flo_Fay", 1), ("Dee_Dao", 1, "Bob_Brown", 1), ("Cy_Chen", 2, "Ann_Archer", 3)]]


def jpeg(seed: int, side: int = 250) -> bytes:
    colour = np.random.default_rng(seed).integers(0, 256, 3, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.broadcast_to(colour, (side, side, 3)).copy()).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def pairs_text() -> str:
    lines = [f"{len(MATCHED)}\t{len(MATCHED[0])}"]
    for matched, mismatched in zip(MATCHED, MISMATCHED):
        lines += ["\t".join(map(str, fields)) for fields in matched]
        lines += ["\t".join(map(str, fields)) for fields in mismatched]
    return "\n".join(lines) + "\n"


def images() -> dict[str, bytes]:
    """Member name -> JPEG bytes, as in lfw.tgz."""
    found = {}
    for seed, (person, count) in enumerate({**PAIRED, **UNPAIRED}.items()):
        for number in range(1, count + 1):
            found[f"lfw/{person}/{person}_{number:04d}.jpg"] = jpeg(100 * seed + number)
    return found


def write_lfw(root: Path, *, archive: bool = False) -> Path:
    """The official layout under `root`: `pairs.txt` and `lfw/` (or `lfw.tgz`); returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pairs.txt").write_text(pairs_text())
    if archive:
        with tarfile.open(root / "lfw.tgz", "w:gz") as tar:
            for name, data in images().items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        for name, data in images().items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    return root
