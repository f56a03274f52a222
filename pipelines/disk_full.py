"""A full disk, wherever a command writes (tracking database, artifacts, checkpoints, datasets), as one
clear error naming the place, instead of the traceback of whichever library hit it first.

A full disk reaches the CLI as an `OSError` (ENOSPC; a copy or an open names the file, a plain write
does not) or, from SQLite, as "database or disk is full" wrapped in SQLAlchemy's and then MLflow's
exceptions, which names no file. Where the error names none, the message names the places the command
writes: its --out, its checkpoints, its tracking store.
"""

from __future__ import annotations

import argparse
import errno
from collections.abc import Iterator
from typing import TYPE_CHECKING

from stride.errors import StrideError

if TYPE_CHECKING:
    from stride.config import StrideConfig

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
SQLITE_FULL = "database or disk is full"  # SQLITE_FULL's message, also in a tracking server's answer


def causes(err: BaseException) -> Iterator[BaseException]:
    """`err`, then what it was raised from or while handling, and so on (each once)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def disk_full_message(err: BaseException, args: argparse.Namespace) -> str | None:
    """What to tell the user when `err` comes from a full disk; None when it does not."""
    for cause in causes(err):
        if isinstance(cause, OSError) and cause.errno in FULL_ERRNOS:
            written = cause.filename2 or cause.filename  # a copy's destination, else the file
            where = f"writing {written}" if written else f"where {args.command} writes ({', '.join(places(args))})"
            return f"disk full: no space left on the device {where}; free some space and run it again"
        if SQLITE_FULL in str(cause):
            return f"disk full: {tracking_store(args)} cannot be written; free some space and run it again"
    return None


def places(args: argparse.Namespace) -> list[str]:
    """Where a command writes, for an error that names no file: its output, checkpoints, tracking store."""
    found = [f"--out {args.out}"] if getattr(args, "out", None) else []
    config = trained_config(args)
    if config is not None:
        found.append(f"checkpoints under {config.trainer.checkpoint_dir}")
    if hasattr(args, "tracking_uri"):
        found.append(tracking_store(args))
    return found or ["the working directory"]


def trained_config(args: argparse.Namespace) -> StrideConfig | None:
    """The config of a command that trains one (`recipe` or `--config` with `--set`), else None."""
    from stride.pipelines.arguments import config_from_args

    if not hasattr(args, "recipe"):
        return None
    try:
        return config_from_args(args)
    except StrideError:
        return None


def tracking_store(args: argparse.Namespace) -> str:
    """The tracking store the command used, as a user recognises it: the SQLite file, or the server."""
    from stride.tracking.store import is_local_store, resolve_tracking_uri

    config = trained_config(args)
    uri = resolve_tracking_uri(getattr(args, "tracking_uri", None) or (config.tracking.uri if config else None))
    if is_local_store(uri):
        return f"the tracking database {uri.removeprefix('sqlite:///')}"
    return f"the tracking server {uri}"
