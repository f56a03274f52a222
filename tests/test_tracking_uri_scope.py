"""MLflow's process-wide (fluent) tracking URI is moved in one place, `tracking.store.set_fluent_tracking_uri`:
what `registry.client.connect` pins and what a `fluent_tracking_uri` block sets for a while. Neither leaves
$MLFLOW_TRACKING_URI changed, and a block gives back the URI it found."""

from __future__ import annotations

import os

import mlflow
import pytest

from stride.pipelines.cli import main
from stride.tracking.store import fluent_tracking_uri, set_fluent_tracking_uri

PINNED, SCOPED, EXPORTED = "sqlite:////tmp/pinned.db", "sqlite:////tmp/scoped.db", "sqlite:////tmp/exported.db"


@pytest.fixture(autouse=True)
def fresh_fluent_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = set_fluent_tracking_uri(None)
    yield
    set_fluent_tracking_uri(before)


def test_a_block_gives_back_the_uri_a_caller_pinned_and_exports_nothing():
    set_fluent_tracking_uri(PINNED)  # as `stride predict` connects
    with fluent_tracking_uri(SCOPED):  # as a model is logged into another store
        assert mlflow.get_tracking_uri() == SCOPED
        assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() == PINNED and "MLFLOW_TRACKING_URI" not in os.environ


def test_a_block_leaves_the_users_variable_as_it_was(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", EXPORTED)
    with fluent_tracking_uri(SCOPED):
        assert mlflow.get_tracking_uri() == SCOPED and os.environ["MLFLOW_TRACKING_URI"] == EXPORTED
    assert mlflow.get_tracking_uri() == EXPORTED and os.environ["MLFLOW_TRACKING_URI"] == EXPORTED
    assert set_fluent_tracking_uri(PINNED) is None  # nothing but the variable had set it
    assert os.environ["MLFLOW_TRACKING_URI"] == EXPORTED


@pytest.mark.parametrize("command", [["train", "digits-cnn"], ["bench", "digits-cnn", "--synthetic", "64"],
                                     ["promote", "--run", "0" * 32, "--model-name", "m"]])
@pytest.mark.parametrize("uri", ["file:///tmp/old-mlruns", "old-mlruns"])
def test_an_mlflow_file_store_is_one_clear_error_before_any_work(command, uri, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert main([*command, "--tracking-uri", uri]) != 0
    err = capsys.readouterr().err
    assert f"tracking URI '{uri}' is an MLflow file store" in err and "sqlite:///" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing measured
