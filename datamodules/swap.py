"""Replacing a complete dataset by another, recoverably, whatever moment the process is killed.

A replacement is two renames (old dataset aside, new one in place) and a clean-up. The new
dataset is complete (manifest written and synced) in a hidden sibling of the target before a
journal beside the target records the swap: the tokens of the two siblings
(`.NAME.stride-tmp-TOKEN`) that hold the new and the old dataset, and the sha256 of each one's
manifest. Any later stride command that opens or writes the target first rolls an unfinished
swap forward: the new dataset into place, then the old one deleted. So one complete dataset is
always at the target or in a sibling the journal names, and no clean-up deletes such a sibling.

Anyone who can write beside a dataset can write a journal, so a journal only ever names
tokens: the folders are built from the target's name, never read from the journal, and stay
beside the target. A folder is moved or deleted only when its manifest has the hash the
journal recorded; a journal that does not match the folders is an error that touches nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from stride.bounded_loading import read_json_file
from stride.datamodules.digest import MANIFEST_NAME, manifest_sha256
from stride.errors import StrideError

TMP_MARK = ".stride-tmp-"
JOURNAL_SUFFIX = ".stride-swap.json"
JOURNAL_FORMAT = 1
MAX_JOURNAL_BYTES = 4096
_TOKEN = re.compile(r"[0-9]{1,10}-[0-9a-z]{1,24}")  # pid, then a random part: no path can hide in it
_SHA256 = re.compile(r"[0-9a-f]{64}")


def journal_path(target: Path) -> Path:
    return target.parent / f".{target.name}{JOURNAL_SUFFIX}"


def sibling(target: Path, token: str) -> Path:
    """The hidden folder `.NAME.stride-tmp-TOKEN` beside `target`: where a prepare writes, and where the old
    dataset waits during a swap."""
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"{token!r} is not a swap token (pid-random)")
    return target.parent / f".{target.name}{TMP_MARK}{token}"


def new_token(kind: str = "") -> str:
    """A token no other process or call uses: this process's id and a random part (`kind` marks its use)."""
    return f"{os.getpid()}-{kind}{uuid.uuid4().hex[:8]}"


def pid_of(token: str) -> int:
    return int(token.split("-", 1)[0])


def token_of(folder: Path, target: Path) -> str | None:
    """The token of `folder` if it is one of `target`'s siblings, else None."""
    prefix = f".{target.name}{TMP_MARK}"
    token = folder.name[len(prefix):]
    if folder.parent != target.parent or not folder.name.startswith(prefix) or not _TOKEN.fullmatch(token):
        return None
    return token


@dataclass(frozen=True)
class Journal:
    new: str  # token of the sibling holding the new dataset
    old: str  # token of the sibling the old dataset is moved to
    new_manifest_sha256: str
    old_manifest_sha256: str


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def swap_in(new: Path, target: Path) -> None:
    """Put the complete dataset `new` (a sibling of `target`) at `target`; an existing dataset at `target` is
    moved to another sibling, then deleted."""
    token = token_of(new, target)
    if token is None:
        raise ValueError(f"{new} is not a swap sibling of {target}")
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()  # an empty folder holds nothing to keep
    if not target.exists():
        os.rename(new, target)
        return
    journal = journal_path(target)
    pending = journal.with_suffix(".tmp")
    record = Journal(new=token, old=new_token("old"), new_manifest_sha256=manifest_sha256(new),
                     old_manifest_sha256=manifest_sha256(target))
    pending.write_text(json.dumps({"format": JOURNAL_FORMAT, **asdict(record)}))
    with open(pending, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(pending, journal)
    _fsync_folder(target.parent)
    finish_swap(target)


def read_journal(journal: Path) -> Journal:
    """The journal's tokens and hashes, or a StrideError saying what is wrong with it."""
    record = read_json_file(journal, max_bytes=MAX_JOURNAL_BYTES)
    fields = {"new": _TOKEN, "old": _TOKEN, "new_manifest_sha256": _SHA256, "old_manifest_sha256": _SHA256}
    if not isinstance(record, dict) or record.get("format") != JOURNAL_FORMAT:
        raise StrideError(f"{journal}: not a stride swap journal of format {JOURNAL_FORMAT}")
    for name, pattern in fields.items():
        value = record.get(name)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise StrideError(f"{journal}: field {name!r} is {json.dumps(value)[:80]}, expected "
                              f"{'a token pid-random' if pattern is _TOKEN else 'a sha256 in hex'}")
    return Journal(**{name: record[name] for name in fields})


def _check_holds(journal: Path, folder: Path, sha256: str, what: str) -> None:
    """Raise, touching nothing, unless `folder` holds the dataset whose manifest hash the journal recorded."""
    found = manifest_sha256(folder) if (folder / MANIFEST_NAME).is_file() else None
    if found != sha256:
        held = "nothing" if not folder.exists() else "no stride dataset" if found is None else \
            f"a dataset whose manifest has sha256 {found[:12]}..."
        raise StrideError(f"{journal}: this journal of an unfinished replacement of {folder.parent} says {folder} "
                          f"holds {what} (manifest sha256 {sha256[:12]}...), but it holds {held}; stride moved and "
                          f"deleted nothing. If no `stride data prepare --overwrite` was interrupted here, delete "
                          f"{journal.name}")


def finish_swap(target: Path) -> bool:
    """Roll an interrupted swap of `target` forward, if its journal says there is one; True if it did."""
    journal = journal_path(target)
    if not journal.is_file():
        return False
    record = read_journal(journal)
    new, old = sibling(target, record.new), sibling(target, record.old)
    if not (new.exists() or target.exists() or old.exists()):
        journal.unlink()  # nothing it names is left: a stale journal
        return True
    if new.exists():  # the new dataset is not in place yet
        _check_holds(journal, new, record.new_manifest_sha256, "the new dataset")
        _check_holds(journal, target if target.exists() else old, record.old_manifest_sha256, "the old dataset")
        if target.exists():
            if old.exists():
                raise StrideError(f"{journal}: {old} exists already, so {target} cannot be moved there; stride moved "
                                  f"and deleted nothing. Delete {journal.name} unless you interrupted a replacement")
            os.rename(target, old)
        os.rename(new, target)
        _fsync_folder(target.parent)
    elif not target.exists():  # nothing new to put in place: keep the old dataset
        _check_holds(journal, old, record.old_manifest_sha256, "the old dataset")
        os.rename(old, target)
    else:  # the new dataset is in place; only the old one's clean-up is left
        _check_holds(journal, target, record.new_manifest_sha256, "the new dataset")
        if old.exists():
            _check_holds(journal, old, record.old_manifest_sha256, "the old dataset")
    journal.unlink()
    shutil.rmtree(old, ignore_errors=True)
    return True


def journalled_folders(parent: Path) -> set[Path]:
    """Folders that unfinished swaps under `parent` still need."""
    needed = set()
    for journal in parent.glob(f".*{JOURNAL_SUFFIX}"):
        target = parent / journal.name[1:-len(JOURNAL_SUFFIX)]
        try:
            record = read_journal(journal)
        except StrideError:
            continue
        needed |= {sibling(target, record.new), sibling(target, record.old)}
    return needed
