"""The variables of a MATLAB v5 file, from their headers only: names, shapes and decoded sizes.

A compressed variable (`miCOMPRESSED`) can inflate a kilobyte into a gigabyte, and scipy's
reader inflates whole blocks before it looks, so what a file will cost is read here first:
each variable's `miMATRIX` header states its decoded size, and only the first few hundred
inflated bytes of each are needed to find it (MATLAB's "MAT-File Format", 2013, chapter 1).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from stride.errors import StrideError

FILE_HEADER_BYTES = 128
MI_INT8, MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED = 1, 5, 6, 14, 15
PEEK_BYTES = 4096  # inflated: the matrix tag, flags, dimensions and name of one variable
PEEK_COMPRESSED_BYTES = 1 << 16


@dataclass(frozen=True)
class MatVariable:
    name: str
    shape: tuple[int, ...]
    decoded_bytes: int  # what the matrix element holds once inflated: an upper bound on its array

    def __str__(self) -> str:
        return f"{self.name} {' x '.join(map(str, self.shape))}"


def mat_variables(path: Path) -> list[MatVariable]:
    """Every variable's header, or a StrideError naming the file; nothing is inflated past the headers."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(FILE_HEADER_BYTES)
            if len(header) < FILE_HEADER_BYTES or header[126:128] not in (b"IM", b"MI"):
                raise ValueError("no MATLAB 5.0 file header")
            order = "<" if header[126:128] == b"IM" else ">"
            found = []
            while tag := handle.read(8):
                kind, size = _tag(tag, order)
                start = handle.tell()
                if kind == MI_COMPRESSED:
                    inflated = zlib.decompressobj().decompress(handle.read(min(size, PEEK_COMPRESSED_BYTES)),
                                                               PEEK_BYTES)
                    kind, size = _tag(inflated[:8], order)
                    body = inflated[8:]
                    end = start + _tag(tag, order)[1]
                else:
                    body = handle.read(min(size, PEEK_BYTES))
                    end = start + size + (-size % 8)
                if kind != MI_MATRIX:
                    raise ValueError(f"a data element of type {kind} where a variable (miMATRIX) belongs")
                found.append(_matrix(body, size, order))
                handle.seek(end)
    except (OSError, ValueError, struct.error, zlib.error) as err:
        raise StrideError(f"{path}: cannot read as a MATLAB v5 file ({err}); is the download complete and "
                          "undamaged?") from None
    return found


def _tag(data: bytes, order: str) -> tuple[int, int]:
    """(type, byte count) of a data element's tag, either form."""
    first, second = struct.unpack(f"{order}II", data)
    return (first & 0xFFFF, first >> 16) if first >> 16 else (first, second)


def _elements(body: bytes, order: str, count: int) -> list[tuple[int, bytes]]:
    """The first `count` sub-elements (type, data) of a matrix element."""
    elements, offset = [], 0
    for _ in range(count):
        first = struct.unpack(f"{order}I", body[offset:offset + 4])[0]
        kind, size = _tag(body[offset:offset + 8], order)
        small = bool(first >> 16)  # data packed into the tag's second word
        start = offset + (4 if small else 8)
        if start + size > len(body):
            raise ValueError("a variable header longer than any real one")
        elements.append((kind, body[start:start + size]))
        offset += 8 if small else 8 + size + (-size % 8)
    return elements


def _matrix(body: bytes, decoded_bytes: int, order: str) -> MatVariable:
    (flags_kind, _), (dims_kind, dims), (name_kind, name) = _elements(body, order, 3)
    if (flags_kind, dims_kind, name_kind) != (MI_UINT32, MI_INT32, MI_INT8):
        raise ValueError("a variable without array flags, dimensions and name")
    shape = struct.unpack(f"{order}{len(dims) // 4}i", dims)
    return MatVariable(name.decode("latin1"), shape, decoded_bytes)
