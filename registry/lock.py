"""A registry-level mutex, so promotions and rollbacks of one model never interleave.

A file lock only protects one machine; promotions may run anywhere that reaches the
tracking server. The lock is a registered model named `<model>.stride-lock`: creating a
registered model is atomic on the server (the name is a unique key in its database), so
exactly one creator wins; the winner deletes it when done. Its tags record the owner and
an expiry; a lock past its expiry (its holder crashed) is broken by the next waiter.

Limits: expiry compares the holder's clock with the waiter's, so machines' clocks must
agree to well within `ttl_s`; a holder that runs longer than `ttl_s` can lose the lock.
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from stride.errors import StrideError
from stride.registry.client import error_code, is_missing
from stride.tracking.contract import LOCK_EXPIRES_TAG, LOCK_OWNER_TAG, LOCK_SUFFIX, LOCK_TAG


def lock_name(model_name: str) -> str:
    return model_name + LOCK_SUFFIX


def is_lock(registered_model) -> bool:
    return registered_model.tags.get(LOCK_TAG) == "true"


def _holder(client: MlflowClient, name: str) -> tuple[str, float] | None:
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as err:
        if is_missing(err):
            return None
        raise
    return tags.get(LOCK_OWNER_TAG, "?"), float(tags.get(LOCK_EXPIRES_TAG, "0") or 0)


def _break_if_stale(client: MlflowClient, name: str, owner: str, expires_at: float) -> None:
    if time.time() < expires_at:
        return
    if _holder(client, name) != (owner, expires_at):  # re-acquired meanwhile: not stale any more
        return
    try:
        client.delete_registered_model(name)
    except MlflowException as err:
        if not is_missing(err):
            raise


def break_lock(client: MlflowClient, model_name: str) -> str | None:
    """Delete the lock whatever its state (`stride registry unlock`); return its owner, if any."""
    name = lock_name(model_name)
    holder = _holder(client, name)
    if holder is not None:
        client.delete_registered_model(name)
    return holder[0] if holder else None


@contextmanager
def registry_lock(client: MlflowClient, model_name: str, *, timeout_s: float = 120.0, ttl_s: float = 600.0,
                  purpose: str = "promotion") -> Iterator[str]:
    """Hold the lock of `model_name` for the block; StrideError naming the holder after `timeout_s`."""
    name = lock_name(model_name)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout_s
    delay_s = 0.1
    while True:
        expires_at = time.time() + ttl_s
        try:
            client.create_registered_model(
                name, tags={LOCK_TAG: "true", LOCK_OWNER_TAG: owner, LOCK_EXPIRES_TAG: f"{expires_at:.3f}"},
                description=f"Held by stride during a {purpose} of {model_name!r}; deleted when done. "
                            f"Safe to delete once {owner} is no longer running (`stride registry unlock`).")
            break
        except MlflowException as err:
            if error_code(err) not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise StrideError(f"cannot take the registry lock {name!r}: {err}") from None
        holder = _holder(client, name)
        if holder is not None:
            _break_if_stale(client, name, *holder)
        if time.monotonic() > deadline:
            who = f"held by {holder[0]} until {time.ctime(holder[1])}" if holder else "contended"
            raise StrideError(f"model {model_name!r} is locked by another promotion or rollback ({who}); retry "
                              f"later, or run `stride registry unlock {model_name}` if that process is gone")
        time.sleep(delay_s * (1 + random.random()))
        delay_s = min(delay_s * 2, 2.0)
    try:
        yield owner
    finally:
        try:
            holder = _holder(client, name)
            if holder is not None and holder[0] == owner:  # never delete a lock someone else took after expiry
                client.delete_registered_model(name)
        except MlflowException:
            pass  # the server went away: the lock expires after ttl_s
