"""sha256 of files, and of a dataset: the hash of its manifest (which hashes every shard).

Kept apart from `manifest.py` so that `swap.py`, which `manifest.py` needs, can identify
datasets too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST_NAME = "manifest.json"


def sha256_of(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_sha256(root: Path) -> str:
    """Identity of a dataset: the hash of its manifest (which hashes every shard)."""
    return sha256_of(Path(root) / MANIFEST_NAME)
