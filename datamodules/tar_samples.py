"""The samples of one WebDataset-format shard: consecutive tar members sharing a key form a sample.

stride reads its shards itself rather than through webdataset (docs/data.md, "The data layer"):
splitting across ranks and workers, shuffling and equal batches per rank are stride's own
(`streaming.py`), and all it took from webdataset were two helpers of an internal module. The
format is webdataset's, unchanged: a member `DIR/KEY.EXT` belongs to sample `DIR/KEY` (the
basename up to its first dot) under field `EXT` (lower-cased), and webdataset reads stride's
shards as stride reads webdataset's (tests/test_shard_format.py).

Stricter than webdataset, because a shard may come from someone else: a member that is not a
regular file (a link, a device), whose name is absolute or climbs with `..`, that has no
extension, or that repeats a field of its sample refuses the shard instead of being skipped; and
a shard must end with tar's end-of-archive block, where Python's tarfile takes a cut or garbled
header for the end and the samples after it would be lost without a word.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

from stride.errors import StrideError
from stride.names import is_plain_relative

MEMBER_NAME = re.compile(r"^((?:.*/|)[^./]+)\.([^/]+)$")


# tarfile's header errors, which its stubs do not declare
_END_OF_ARCHIVE = getattr(tarfile, "EOFHeaderError")  # noqa: B009
_NOT_A_HEADER = tuple(getattr(tarfile, name) for name in ("EmptyHeaderError", "TruncatedHeaderError",
                                                          "InvalidHeaderError"))


class _EndMarkedTarInfo(tarfile.TarInfo):
    """Header reading for which only the zero block that closes an archive ends it."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> _EndMarkedTarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except _END_OF_ARCHIVE:
            raise
        except _NOT_A_HEADER as err:
            raise tarfile.ReadError(f"no end-of-archive block at byte {tarfile_.offset} ({err})") from None


def split_member_name(name: str) -> tuple[str, str] | None:
    """(key, field) of a member name, or None when the basename has no extension."""
    match = MEMBER_NAME.match(name)
    return (match.group(1), match.group(2).lower()) if match else None


def tar_samples(stream: BinaryIO, source: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {field: bytes}) in shard order, reading `stream` once, front to back."""
    key: str | None = None
    fields: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|", tarinfo=_EndMarkedTarInfo) as tar:
        for member in tar:
            if member.isdir():
                continue
            member_key, field = _checked_member(member, source)
            if member_key != key:
                if key is not None:
                    yield key, fields
                key, fields = member_key, {}
            if field in fields:
                raise StrideError(f"shard {source}: sample {key!r} has two members for field .{field}")
            payload = tar.extractfile(member)
            assert payload is not None  # a regular file always has a payload
            fields[field] = payload.read()
            cast(Any, tar).members.clear()  # tarfile keeps every header it read, even when streaming
    if key is not None:
        yield key, fields


def _checked_member(member: tarfile.TarInfo, source: str) -> tuple[str, str]:
    if not member.isreg():
        raise StrideError(f"shard {source}: member {member.name!r} is not a regular file (a link or device); "
                          "refusing the shard")
    if not is_plain_relative(member.name):
        raise StrideError(f"shard {source}: member {member.name!r} is not a plain relative name (absolute, "
                          "'..' or empty parts); refusing the shard")
    parts = split_member_name(member.name)
    if parts is None:
        raise StrideError(f"shard {source}: member {member.name!r} has no extension; shard members are "
                          "named KEY.FIELD (e.g. 000017.png)")
    return parts
