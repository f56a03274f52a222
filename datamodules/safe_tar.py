"""Read the files of a downloaded `.tar.gz` in place: nothing is extracted, so nothing can escape.

The archive is still checked member by member: one whose name is absolute or climbs out with
`..`, or that is a link, device or fifo, refuses the whole archive, since an official dataset
archive holds only plain files and folders.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

from stride.errors import StrideError
from stride.names import is_plain_relative

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def read_archive_files(archive: Path, wanted: Callable[[str], bool], *, max_file_bytes: int,
                       max_total_bytes: int) -> dict[str, bytes]:
    """The regular files of `archive` whose member names (`./` prefixes dropped) are `wanted`.

    Every member is checked; only wanted ones are read into memory, so an archive that also
    holds something huge costs nothing for it. Sizes come from the member headers, before
    anything is inflated: a wanted file over `max_file_bytes`, or members adding up to more
    than `max_total_bytes`, refuse the archive (a few MB of .tar.gz can inflate to gigabytes).
    """
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if not is_plain_relative(member.name):
                    raise StrideError(f"{archive}: member {member.name!r} would land outside the target folder "
                                      "(absolute path, '..' or empty part); refusing the archive")
                if member.isdir():
                    continue
                if not member.isfile():
                    kind = "link" if member.issym() or member.islnk() else "device or fifo"
                    raise StrideError(f"{archive}: member {member.name!r} is a {kind}; a dataset archive holds only "
                                      "plain files and folders, refusing it")
                name = "/".join(part for part in member.name.split("/") if part != ".")
                total += member.size
                if wanted(name) and member.size > max_file_bytes:
                    raise StrideError(f"{archive}: member {member.name!r} holds {member.size:,} bytes, more than any "
                                      f"file of this dataset ({max_file_bytes:,}); refusing to inflate it")
                if total > max_total_bytes:
                    raise StrideError(f"{archive}: its members up to {member.name!r} hold {total:,} bytes, more than "
                                      f"the whole dataset ({max_total_bytes:,}); refusing to inflate it")
                if wanted(name):
                    extracted = tar.extractfile(member)
                    assert extracted is not None  # a plain file (checked above) always has a stream
                    files[name] = extracted.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise StrideError(f"{archive}: cannot read the archive ({err}); is the download complete and "
                          "undamaged?") from None
    return files
