"""File names derived from data or user input: made safe, or refused.

Sample keys, class names, run, search and model names end up in paths. `safe_filename`
turns any text into one harmless path component (class `T-shirt/top` -> `T-shirt_top`);
`plain_name` refuses a name that would leave its folder, for names a user gave on purpose.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from stride.errors import StrideError

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")
MAX_COMPONENT = 120


def safe_filename(text: str, fallback: str = "unnamed") -> str:
    """One path component made of letters, digits and `._+=-`, never starting with a dot."""
    cleaned = re.sub(r"\.{2,}", ".", _UNSAFE.sub("_", str(text))).strip("._")[:MAX_COMPONENT]
    return cleaned or fallback


def plain_name(name: str, what: str) -> str:
    """`name` if it is one plain path component, else a StrideError naming `what` and the rule."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or name.startswith("."):
        raise StrideError(f"{what} {name!r} is not a plain name: no '/', '\\\\', leading '.', or empty name "
                          "(it becomes a folder or file name)")
    return name


def is_plain_relative(member: str) -> bool:
    """A tar member name that stays inside the folder it is extracted or read into."""
    path = PurePosixPath(member)
    return bool(member) and not path.is_absolute() and "\\" not in member and "\x00" not in member \
        and all(part not in ("", "..") for part in member.split("/"))


def inside(folder: Path, path: Path) -> Path:
    """`path`, after checking that it resolves inside `folder` (a last line of defence)."""
    resolved, root = path.resolve(), folder.resolve()
    if resolved != root and root not in resolved.parents:
        raise StrideError(f"refusing to write {path}: it is outside {folder}")
    return path


def output_folder(path: str | Path, option: str) -> Path:
    """`path` as a folder to write into (made when first needed), refused before any work when it, or a
    folder it would be made in, is a file."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == path else f"is inside {existing}, which is a file"
        raise StrideError(f"{option} {path}: {where}; give a folder (it is made if missing)")
    return path
