"""Replacing a complete dataset by another, recoverably, whatever moment the process is killed.

A replacement is two renames (old dataset aside, new one in place) and a clean-up. Before
the first rename a journal beside the target names the three folders; the new dataset is
complete (manifest written and synced) before the journal exists. Any later stride command
that opens or writes the target first rolls an unfinished swap forward: the new dataset
into place, then the old one deleted. So one complete dataset is always at the target or
named by the journal, and no clean-up ever deletes a folder a journal names.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

JOURNAL_SUFFIX = ".stride-swap.json"


def journal_path(target: Path) -> Path:
    return target.parent / f".{target.name}{JOURNAL_SUFFIX}"


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def swap_in(new: Path, target: Path, old: Path) -> None:
    """Put the complete dataset `new` at `target`; an existing `target` goes to `old`, then is deleted."""
    if not target.exists():
        os.rename(new, target)
        return
    journal = journal_path(target)
    pending = journal.with_suffix(".tmp")
    pending.write_text(json.dumps({"target": str(target), "new": str(new), "old": str(old)}))
    with open(pending, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(pending, journal)
    _fsync_folder(target.parent)
    finish_swap(target)


def finish_swap(target: Path) -> bool:
    """Roll an interrupted swap of `target` forward, if its journal says there is one; True if it did."""
    journal = journal_path(target)
    if not journal.is_file():
        return False
    record = json.loads(journal.read_text())
    new, old = Path(record["new"]), Path(record["old"])
    if new.exists():  # the new dataset is not in place yet
        if target.exists():
            os.rename(target, old)
        os.rename(new, target)
        _fsync_folder(target.parent)
    elif not target.exists() and old.exists():  # nothing new to put in place: keep the old dataset
        os.rename(old, target)
    journal.unlink()
    shutil.rmtree(old, ignore_errors=True)
    return True


def journalled_folders(parent: Path) -> set[Path]:
    """Folders that unfinished swaps under `parent` still need."""
    needed = set()
    for journal in parent.glob(f".*{JOURNAL_SUFFIX}"):
        try:
            record = json.loads(journal.read_text())
            needed |= {Path(record["new"]), Path(record["old"])}
        except (OSError, ValueError, KeyError):
            continue
    return needed
