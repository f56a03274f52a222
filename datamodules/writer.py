"""Atomic writing of sharded WebDataset datasets.

Everything is written into a hidden temporary folder beside the target and moved into
place only when every shard and the manifest are complete, so an interrupted or failed
prepare leaves the target untouched (absent, or the previous dataset). Replacing an
existing dataset needs `overwrite=True`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stride import __version__
from stride.datamodules.manifest import MANIFEST_NAME, Manifest, ShardEntry, SplitEntry, sha256_of
from stride.datamodules.swap import (
    TMP_MARK,
    finish_swap,
    journalled_folders,
    new_token,
    pid_of,
    sibling,
    swap_in,
    token_of,
)
from stride.errors import StrideError
from stride.names import plain_name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out_dir: Path) -> None:
    """Delete temporary folders left by prepares that were killed (their process is gone), after rolling
    an interrupted replacement forward; never a folder an unfinished swap still names."""
    finish_swap(out_dir)
    needed = journalled_folders(out_dir.parent)
    for candidate in out_dir.parent.glob(f".{out_dir.name}{TMP_MARK}*"):
        token = token_of(candidate, out_dir)
        if token is not None and candidate not in needed and not _pid_alive(pid_of(token)):
            shutil.rmtree(candidate, ignore_errors=True)


class ShardWriter:
    """Write samples split by split into `{split}-{NNNNNN}.tar` shards, then commit atomically.

    Use as a context manager; `add(split, key, members)` takes already-encoded bytes per
    tar member extension, e.g. {"png": b"...", "cls": b"3"}.
    """

    def __init__(self, out_dir: str | Path, *, samples_per_shard: int = 5000, overwrite: bool = False):
        if samples_per_shard < 1:
            raise StrideError(f"--shard-size must be at least 1, got {samples_per_shard}")
        self.out_dir = Path(out_dir).absolute()
        self.samples_per_shard = samples_per_shard
        self.overwrite = overwrite
        remove_stale_temporaries(self.out_dir)  # first: it may put an interrupted replacement in place
        self._check_target()
        self.tmp_dir = sibling(self.out_dir, new_token())
        self._splits: dict[str, list[ShardEntry]] = {}
        self._tar: tarfile.TarFile | None = None
        self._tar_file: io.BufferedWriter | None = None
        self._tar_split = ""
        self._tar_count = 0
        self._keys: set[tuple[str, str]] = set()

    def _check_target(self) -> None:
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise StrideError(f"output {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()):
            if not (out / MANIFEST_NAME).is_file():
                raise StrideError(f"output folder {out} is not empty and holds no stride dataset; "
                                  "choose an empty or new folder")
            if not self.overwrite:
                raise StrideError(f"a dataset already exists at {out}; pass --overwrite to replace it")
        parent = out.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StrideError(f"cannot create output folder {parent}: {err.strerror}") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StrideError(f"output folder {parent} is not writable")

    def __enter__(self) -> ShardWriter:
        self.tmp_dir.mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._tar_file is not None:  # left open by an error: its buffer may not be writable either
            with contextlib.suppress(OSError):
                self._tar_file.close()
        if exc_type is None:
            return
        if self.tmp_dir not in journalled_folders(self.out_dir.parent):  # a swap that began is finished, not undone
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = "; the existing dataset there is untouched" if (self.out_dir / MANIFEST_NAME).is_file() else ""
            raise StrideError(f"disk full while writing the dataset {self.out_dir}: {exc.strerror} on the file system "
                              f"holding {self.out_dir.parent}; its temporary folder was removed{kept}. Free some "
                              "space and run the command again") from None

    def _close_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()  # writes the end-of-archive blocks, leaves the file to us
        assert self._tar_file is not None  # opened together with self._tar
        self._tar_file.flush()
        os.fsync(self._tar_file.fileno())
        self._tar_file.close()
        self._tar = self._tar_file = None
        name = f"{self._tar_split}-{len(self._splits[self._tar_split]) :06d}.tar"
        path = self.tmp_dir / name
        self._splits[self._tar_split].append(
            ShardEntry(name=name, num_samples=self._tar_count, num_bytes=path.stat().st_size, sha256=sha256_of(path)))

    def add(self, split: str, key: str, members: dict[str, bytes]) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
        if (split, key) in self._keys:
            raise ValueError(f"duplicate sample key {key!r} in split {split!r}")
        self._keys.add((split, key))
        if self._tar is not None and (self._tar_split != split or self._tar_count >= self.samples_per_shard):
            self._close_shard()
        if self._tar is None:
            shards = self._splits.setdefault(split, [])
            self._tar_file = open(self.tmp_dir / f"{split}-{len(shards):06d}.tar", "wb")
            self._tar = tarfile.open(fileobj=self._tar_file, mode="w", format=tarfile.USTAR_FORMAT)
            self._tar_split, self._tar_count = split, 0
        for ext, payload in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(payload)
            info.mode = 0o444
            self._tar.addfile(info, io.BytesIO(payload))
        self._tar_count += 1

    def add_file(self, name: str, data: bytes) -> Path:
        """Write one extra file (e.g. `vocabulary.json`) into the dataset; it moves into place with the shards."""
        plain_name(name, "dataset file")
        if name == MANIFEST_NAME or name.endswith(".tar") or (self.tmp_dir / name).exists():
            raise ValueError(f"dataset file {name!r} is the manifest, a shard name or already written")
        return self._write_synced(name, data)

    def copy_file(self, name: str, chunks: Iterable[bytes]) -> Path:
        """Write a file of another dataset (a shard or an extra file) byte for byte (`stride data copy`)."""
        plain_name(name, "dataset file")
        if name == MANIFEST_NAME or (self.tmp_dir / name).exists():
            raise ValueError(f"dataset file {name!r} is the manifest or already written")
        path = self.tmp_dir / name
        with open(path, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        return path

    def commit_copy(self, manifest_bytes: bytes) -> None:
        """Write another dataset's manifest byte for byte (so the copy keeps its identity) and move it into place."""
        self._write_synced(MANIFEST_NAME, manifest_bytes)
        swap_in(self.tmp_dir, self.out_dir)

    def _write_synced(self, name: str, data: bytes) -> Path:
        path = self.tmp_dir / name
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return path

    def commit(self, **manifest_fields: Any) -> Manifest:
        """Finish the last shard, write the manifest and move the dataset into place."""
        self._close_shard()
        splits = {name: SplitEntry(num_samples=sum(s.num_samples for s in shards), shards=shards)
                  for name, shards in self._splits.items()}
        manifest = Manifest(splits=splits, stride_version=__version__, **manifest_fields)
        self._write_synced(MANIFEST_NAME, (json.dumps(manifest.model_dump(), indent=2) + "\n").encode())
        swap_in(self.tmp_dir, self.out_dir)
        return manifest
