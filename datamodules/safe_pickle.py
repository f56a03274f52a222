"""Unpickle data files that are pickles by necessity (CIFAR's Python version), admitting only data.

A pickle can name any importable callable and call it while loading, so reading an
untrusted one is running untrusted code. This unpickler resolves only the globals that
numpy arrays, lists, dicts and bytes need, and refuses every other one before it is
imported, naming the file and the global (`posix.system`, `builtins.eval`, ...).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from stride.errors import StrideError

# ndarray.__reduce__ names numpy's `_reconstruct`: `numpy.core.multiarray` in files written by
# numpy 1 (the official CIFAR files, made with Python 2's cPickle), `numpy._core.multiarray` by numpy 2.
_RECONSTRUCT = np.ndarray((0,), np.uint8).__reduce__()[0]


class RefusedGlobal(pickle.UnpicklingError):
    """A global (or a use of one) that data does not need."""


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """What Python 3 pickles bytes as under protocol <= 2: `_codecs.encode(text, "latin1")`."""
    if encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal(f"_codecs.encode with encoding {encoding!r} (only latin1 makes bytes)")
    return text.encode("latin1")


ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class DataOnlyUnpickler(pickle.Unpickler):
    """Resolves only ALLOWED_GLOBALS; every other global (os.system, eval, subprocess, ...) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not data")


def load_data_pickle(payload: bytes, origin: str) -> Any:
    """Unpickle `payload` (read from `origin`, named in errors) as Python 2 wrote it: str -> bytes."""
    try:
        return DataOnlyUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except RefusedGlobal as err:
        allowed = ", ".join(sorted({f"{m}.{n}" for m, n in ALLOWED_GLOBALS}))
        raise StrideError(f"{origin}: refusing to unpickle the global {err}: this file should hold "
                          f"only numpy arrays, lists, dicts and bytes (allowed globals: {allowed}); it may be "
                          "malicious, do not load it elsewhere") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as err:  # what a truncated or corrupted pickle stream raises
        raise StrideError(f"{origin}: not a complete pickle ({type(err).__name__}: {err}); is the file truncated "
                          "or damaged?") from None
