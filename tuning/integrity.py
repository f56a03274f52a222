"""Trusting a search's saved state before Ray unpickles it on `--resume`.

Ray Tune restores an experiment by unpickling files from the storage folder (the tuner,
the trainable, the searcher and trial states). A storage folder on shared disk or in a
bucket is writable by more people than the user, and a crafted pickle there runs code on
resume. So whenever a search stops (finished, interrupted, crashed), stride hashes every
state file Ray may unpickle and records the digests on the search's MLflow parent run: the
list as an artifact, its own sha256 as a tag. `--resume` recomputes them and refuses to
load anything when a file changed, appeared or is missing. Checkpoints are not listed:
the training core reads them with `torch.load(weights_only=True)`, which refuses anything but
weights; a resume reads every one of a local folder that way before Ray starts, and a trial
that meets one anyway (a checkpoint replaced while the search ran) fails with `CheckpointRefused`,
which fails the search instead of letting it go on without the trial.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from stride.errors import StrideError
from stride.tracking.contract import STATE_DIGESTS_ARTIFACT as DIGESTS_ARTIFACT
from stride.tracking.contract import STATE_DIGESTS_TAG as DIGESTS_TAG
from stride.training.checkpoints import read_checkpoint

CHECKPOINT_SUFFIXES = (".ckpt",)  # read with weights_only=True, never unpickled


def _filesystem(storage: str):
    import pyarrow.fs

    if "://" in storage:
        return pyarrow.fs.FileSystem.from_uri(storage)
    return pyarrow.fs.LocalFileSystem(), storage


def state_digests(storage: str, name: str) -> dict[str, str]:
    """sha256 of every file under STORAGE/NAME that a resume may unpickle (everything but checkpoints)."""
    import pyarrow.fs

    fs, root = _filesystem(storage)
    base = f"{root}/{name}"
    digests = {}
    for info in fs.get_file_info(pyarrow.fs.FileSelector(base, recursive=True)):
        if info.type != pyarrow.fs.FileType.File or info.path.endswith(CHECKPOINT_SUFFIXES):
            continue
        digest = hashlib.sha256()
        with fs.open_input_stream(info.path) as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digests[info.path[len(base) + 1:]] = digest.hexdigest()
    return dict(sorted(digests.items()))


def _canonical(digests: dict[str, str]) -> bytes:
    return json.dumps(digests, sort_keys=True, indent=0).encode()


def record_state(uri: str, parent_run_id: str, storage: str, name: str) -> None:
    """Store the digests of the search's state on its parent run (called whenever the driver stops)."""
    digests = state_digests(storage, name)
    client = MlflowClient(uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / DIGESTS_ARTIFACT
        path.write_bytes(_canonical(digests))
        client.log_artifact(parent_run_id, str(path))
    client.set_tag(parent_run_id, DIGESTS_TAG, hashlib.sha256(_canonical(digests)).hexdigest())


def verify_state(uri: str, parent_run_id: str, storage: str, name: str) -> None:
    """Raise, naming the files, unless the saved state is exactly what this search recorded."""
    client = MlflowClient(uri)
    where = f"{storage}/{name}"
    try:
        expected_sha = client.get_run(parent_run_id).data.tags.get(DIGESTS_TAG)
        if not expected_sha:
            raise StrideError(f"{where}: the search's MLflow run {parent_run_id} holds no digests of its saved state "
                              "(its driver was killed before it could record them), so stride will not load that "
                              "state; pass --trust-storage if nobody else can write to this folder")
        with tempfile.TemporaryDirectory() as tmp:
            recorded_bytes = Path(client.download_artifacts(parent_run_id, DIGESTS_ARTIFACT, tmp)).read_bytes()
    except MlflowException as err:
        raise StrideError(f"{where}: the digests of its saved state cannot be read from MLflow run {parent_run_id} "
                          f"at {uri} ({err.message}); nothing was loaded") from None
    if hashlib.sha256(recorded_bytes).hexdigest() != expected_sha:
        raise StrideError(f"{where}: the recorded digests of run {parent_run_id} were altered; refusing to resume")
    recorded = json.loads(recorded_bytes)
    actual = state_digests(storage, name)
    changed = sorted(f for f in recorded.keys() & actual.keys() if recorded[f] != actual[f])
    added, missing = sorted(actual.keys() - recorded.keys()), sorted(recorded.keys() - actual.keys())
    if changed or added or missing:
        problems = "; ".join(f"{label}: {', '.join(files[:5])}" for label, files in
                             (("changed", changed), ("unknown", added), ("missing", missing)) if files)
        raise StrideError(f"{where}: the saved search state is not what stride recorded ({problems}); it would be "
                          "unpickled on resume, so nothing was loaded. Pass --trust-storage only if you know why "
                          "it changed")


class CheckpointRefused(StrideError):
    """A trial checkpoint that `torch.load(weights_only=True)` refuses: not stride's weights."""


def refuse_unloadable(path: str) -> None:
    """Raise `CheckpointRefused` unless the checkpoint at `path` loads as weights (tensors stay on disk)."""
    try:
        read_checkpoint(path, mmap=True)
    except StrideError as err:
        raise CheckpointRefused(f"{err} (not weights that stride wrote; nothing was loaded from it)") from None


def refuse_unloadable_checkpoints(storage: str, name: str) -> None:
    """Before a resume starts anything: every trial checkpoint of a local search folder loads as weights.
    (A folder on a bucket is left to the trials, which refuse such a checkpoint the same way.)"""
    if "://" in storage:
        return
    for path in sorted(p for suffix in CHECKPOINT_SUFFIXES for p in Path(storage, name).rglob(f"*{suffix}")):
        refuse_unloadable(str(path))
