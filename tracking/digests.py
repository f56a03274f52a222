"""sha256 digests of the files stride logs, kept in the tracking store and checked before anything is loaded.

The artifact store (a shared folder, a bucket) is often writable by more people and machines than the
tracking store's database. A digest recorded in the database when a file was logged lets a later reader
tell the file stride wrote from one planted in its place, before reading a byte of it as a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from stride.errors import StrideError

CHUNK_BYTES = 1 << 20


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def folder_digests(folder: str | Path) -> dict[str, str]:
    """Every file under `folder` (its path relative to `folder`, with `/`) -> its sha256."""
    folder = Path(folder)
    return {path.relative_to(folder).as_posix(): file_sha256(path) for path in sorted(folder.rglob("*"))
            if path.is_file()}


def encode_digests(digests: dict[str, str]) -> str:
    return json.dumps(dict(sorted(digests.items())), separators=(",", ":"))


def decode_digests(text: str, where: str) -> dict[str, str]:
    try:
        digests = json.loads(text)
    except json.JSONDecodeError as err:
        raise StrideError(f"{where}: the recorded file digests are not JSON ({err})") from None
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise StrideError(f"{where}: the recorded file digests are not a mapping of file to sha256")
    return digests


def check_file(path: Path, expected_sha256: str, what: str) -> None:
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise StrideError(f"{what} has sha256 {actual[:16]}..., not the {expected_sha256[:16]}... recorded when stride "
                          "logged it: the copy in the artifact store was changed since; refusing to load it")


def check_folder(folder: Path, recorded: dict[str, str], what: str, unread: frozenset[str] = frozenset()) -> None:
    """StrideError unless `folder` holds exactly the recorded files, each with its recorded sha256, besides
    `unread` ones (paths the caller never reads)."""
    present = {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()} - unread
    if extra := sorted(present - recorded.keys()):
        raise StrideError(f"{what} holds files stride did not log: {', '.join(extra)}; refusing to load it")
    if missing := sorted(recorded.keys() - present):
        raise StrideError(f"{what} lacks files stride logged: {', '.join(missing)}; refusing to load it")
    for name in sorted(recorded):
        check_file(folder / name, recorded[name], f"{what}: {name}")


def download_verified(tracking_uri: str, run_id: str, artifact_path: str, expected_sha256: str | None,
                      folder: str | Path, what: str, hint: str = "") -> Path:
    """Run `run_id`'s artifact, downloaded into `folder` and checked against the digest recorded with it;
    `hint` follows the error when the artifact is not there."""
    if not expected_sha256:
        raise StrideError(f"{what}: run {run_id} recorded no sha256 of its {artifact_path} (logged before stride "
                          "recorded digests), so it cannot be told from a file planted in the artifact store; "
                          "train the run again to log verifiable weights")
    try:
        path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                        dst_path=str(folder), tracking_uri=tracking_uri))
    except (MlflowException, OSError) as err:
        raise StrideError(f"{what}: its run {run_id} has no {artifact_path} artifact ({err}){hint}") from None
    check_file(path, expected_sha256, f"{what}: {artifact_path} of run {run_id}")
    return path
