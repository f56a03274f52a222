"""What `stride tune --resume` trusts: the user's tracking store, never one the storage folder names.

A search folder is built as `stride tune` leaves it (record, Ray's pickled tuner, digests on the
parent run in the user's store); then someone who can write the folder swaps in a tuner.pkl that
runs code when unpickled, and points the record at a store of their own holding matching digests.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

from stride.errors import StrideError
from stride.tuning import load_search, resume_search
from stride.tuning.integrity import record_state
from stride.tuning.runs import start_parent
from stride.tuning.search import write_record


class Exploit:
    """A pickle that runs code when loaded: it creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def tracked_search(uri: str, storage: Path, name: str, search, tuner_pkl: bytes) -> str:
    """The folder and the parent run a stopped search leaves: its record, Ray's tuner.pkl and the digests."""
    spec = search.spec.model_dump(mode="json")
    parent = start_parent(uri, "trust", name, spec, {d.key: d.describe() for d in search.dimensions})
    write_record(str(storage), name, {"name": name, "search": search.to_dict(), "tracking_uri": uri,
                                      "parent_run_id": parent, "resources": {"cpus": 1.0, "gpus": 0.0, "workers": 1}})
    (storage / name / "tuner.pkl").write_bytes(tuner_pkl)
    record_state(uri, parent, str(storage), name)
    return parent


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[str, str]:
    """The user's tracking store and one of an attacker's (SQLite, created once: each costs seconds)."""
    root = tmp_path_factory.mktemp("stores")
    return f"sqlite:///{root / 'users.db'}", f"sqlite:///{root / 'attackers.db'}"


@pytest.fixture(scope="module")
def search(tmp_path_factory, digits_shards):
    spec = tmp_path_factory.mktemp("spec") / "trust.yaml"
    spec.write_text(yaml.safe_dump({"base": "digits-cnn", "overrides": [f"data.path={digits_shards}"],
                                    "space": {"optim.lr": {"grid": [0.05]}}, "num_samples": 1}))
    return load_search(str(spec))


@pytest.mark.parametrize("users_store_has_the_search", [True, False])
def test_resume_refuses_a_folder_that_names_another_tracking_store(tmp_path, stores, search, monkeypatch,
                                                                   users_store_has_the_search):
    users, attackers = stores
    name = f"victim-{users_store_has_the_search}"
    storage, marker = tmp_path / "ray", tmp_path / "code-ran"
    if users_store_has_the_search:
        tracked_search(users, storage, name, search, pickle.dumps({"ray": "state"}))
    tracked_search(attackers, storage, name, search, pickle.dumps(Exploit(marker)))  # digests match the folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", users)  # what the user's `stride tune --resume` runs with

    expected = (rf"stride_search\.json names MLflow run \w+, which is not a search named '{name}' in "
                r"sqlite:///.*users\.db" if users_store_has_the_search else
                rf"no search named '{name}' in the MLflow tracking store sqlite:///.*users\.db; resume with the "
                r"--tracking-uri")
    with pytest.raises(StrideError, match=expected):
        resume_search(name, storage=str(storage))
    with pytest.raises(StrideError, match=expected):  # --trust-storage skips the digests, never the store
        resume_search(name, storage=str(storage), tracking_uri=users, trust_storage=True)
    assert not marker.exists()


def test_resume_checks_the_users_digests_whatever_run_the_folder_names(tmp_path, stores, search):
    """The record may name the user's own run: the digests still come from the user's store."""
    users, _ = stores
    storage, marker = tmp_path / "ray", tmp_path / "code-ran"
    tracked_search(users, storage, "changed", search, pickle.dumps({"ray": "state"}))
    (storage / "changed" / "tuner.pkl").write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(StrideError, match=r"not what stride recorded \(changed: tuner\.pkl\); .*nothing was loaded"):
        resume_search("changed", storage=str(storage), tracking_uri=users)
    assert not marker.exists()
