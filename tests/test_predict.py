"""`stride predict` from a registered champion on PNG/JPEG files of any size and on .npy arrays."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
import torch
from conftest import free_port
from PIL import Image
from test_registry_support import TrainedRuns, runs, stride  # noqa: F401 (fixture)

from stride.registry import predict_files, promote_best, write_sample_images
from stride.tracking.store import fluent_tracking_uri

pytestmark = pytest.mark.slow  # end to end: real Lightning, MLflow, Ray or processes

MODEL = "digits-served"
CHAMPION = f"models:/{MODEL}@champion"


@pytest.fixture(scope="module")
def champion(mlflow_server: str, runs: TrainedRuns) -> str:
    promote_best(mlflow_server, run_id=runs.better, model_name=MODEL)  # idempotent if another module did it
    return CHAMPION


def stored_test_digits(shards: Path, folder: Path, count: int = 2) -> list[np.ndarray]:
    """The first test images exactly as stored (uint8 28 x 28), via the helper quickstart uses."""
    return [np.asarray(Image.open(path)) for path, _ in write_sample_images(shards, folder, count)]


@pytest.fixture(scope="module")
def files(digits_shards: Path, tmp_path_factory) -> dict[str, Path]:
    """One test digit as a 28 x 28 PNG, a 56 x 56 PNG, a 90 x 70 RGB JPEG and a uint8 .npy; another as float .npy."""
    folder = tmp_path_factory.mktemp("predict")
    first, second = stored_test_digits(digits_shards, folder / "samples")
    paths = {"png": folder / "digit.png", "big": folder / "digit-56px.png", "jpeg": folder / "digit-rgb.jpg",
             "npy": folder / "digit.npy", "float": folder / "other.npy"}
    Image.fromarray(first).save(paths["png"])
    Image.fromarray(first).resize((56, 56), Image.Resampling.BILINEAR).save(paths["big"])
    Image.fromarray(first).convert("RGB").resize((90, 70)).save(paths["jpeg"], quality=95)
    np.save(paths["npy"], first[None])
    np.save(paths["float"], (second[None] / 255.0).astype(np.float32))
    return paths


def test_predict_prints_a_table_with_class_names_and_top_k(mlflow_server, champion, files, capsys):
    code, out, err = stride(capsys, "predict", "--model", champion, *files.values(), "--top-k", "2",
                            "--tracking-uri", mlflow_server)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["file", "class", "probability", "top-k"]
    assert len(lines) == 1 + len(files)
    for line, path in zip(lines[1:], files.values()):
        cells = line.split()
        assert cells[0] == str(path) and cells[1] in [str(d) for d in range(10)] and len(cells) == 3 + 2


def test_predict_json_matches_the_model_on_the_stored_pixels(mlflow_server, champion, files, digits_shards, tmp_path,
                                                             capsys):
    code, out, err = stride(capsys, "predict", "--model", champion, *files.values(), "--json",
                            "--tracking-uri", mlflow_server)
    assert code == 0, err
    report = json.loads(out)
    assert report["model"] == champion
    rows = {Path(r["file"]).name: r for r in report["predictions"]}
    for row in rows.values():
        probabilities = [c["probability"] for c in row["top_k"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert row["class"] == row["top_k"][0]["class"] and 0 < row["probability"] <= 1
    with fluent_tracking_uri(mlflow_server):  # exports nothing to later tests
        network = mlflow.pytorch.load_model(champion)
        first, second = stored_test_digits(digits_shards, tmp_path)
        with torch.no_grad():
            expected = network(torch.from_numpy(np.stack([first[None], second[None]]).astype(np.float32) / 255)).numpy()
        for name, index in (("digit.png", 0), ("digit.npy", 0), ("other.npy", 1)):  # same pixels, same answer
            assert rows[name]["class"] == str(int(expected[index].argmax()))
            assert rows[name]["probability"] == pytest.approx(float(expected[index].max()), abs=1e-5)


def test_predict_files_takes_any_model_uri(mlflow_server, champion, runs, files):
    from mlflow import MlflowClient

    run = MlflowClient(mlflow_server).get_run(runs.better)
    by_alias, _ = predict_files(champion, [files["png"]], top_k=1, tracking_uri=mlflow_server)
    by_version, _ = predict_files(f"models:/{MODEL}/1", [files["png"]], top_k=1, tracking_uri=mlflow_server)
    by_logged, _ = predict_files(run.data.tags["stride.model_uri"], [files["png"]], tracking_uri=mlflow_server)
    by_run, table = predict_files(f"runs:/{runs.better}/model", [files["png"]], tracking_uri=mlflow_server)
    assert {r[0].label for r in (by_alias, by_version, by_logged, by_run)} == {by_alias[0].label}
    assert by_logged[0].probability == pytest.approx(by_alias[0].probability)
    assert table.splitlines()[0].split() == ["file", "class", "probability", "top-k"]


@pytest.mark.parametrize("case", ["shape", "unreadable", "absent", "folder", "alias", "model", "uri", "server"])
def test_predict_bad_input_fails_clearly(case, mlflow_server, champion, files, tmp_path, capsys):
    model, path, server = champion, files["png"], mlflow_server
    if case == "shape":
        path = tmp_path / "wide.npy"
        np.save(path, np.zeros((1, 28, 32), np.float32))
        message = f"{path}: array has shape [1, 28, 32], the model expects [1, 28, 28]"
    elif case == "unreadable":
        path = tmp_path / "truncated.png"
        path.write_bytes(files["png"].read_bytes()[:20])
        message = f"{path}: not a readable PNG image"
    elif case == "absent":
        path = tmp_path / "absent.png"
        message = f"{path}: no such file"
    elif case == "folder":
        path = tmp_path
        message = f"{path}: is a folder; give the files in it"
    elif case == "alias":
        model, message = f"models:/{MODEL}@staging", f"model '{MODEL}' has no alias @staging (it has @champion (v1))"
    elif case == "model":
        model, message = "models:/no-such-model@champion", "no registered model 'no-such-model'"
    elif case == "uri":
        model, message = "digits-served", "model URI 'digits-served' is not supported"
    else:
        server = f"http://127.0.0.1:{free_port()}"
        message = f"MLflow tracking server {server} is unreachable"
    code, out, err = stride(capsys, "predict", "--model", model, path, "--tracking-uri", server)
    assert code == 2 and message in err and out == "", err
