"""`stride bench` end to end on tiny data: every number present, positive and consistent (no timing thresholds)."""

import json

import pytest
import torch

from stride.benchmarking import BenchReport
from stride.config import load_config
from stride.lightning_modules.classification import ClassificationModule
from stride.pipelines.cli import main
from stride.training.speed import apply_speed_options, resolve_channels_last, resolve_precision


def bench_json(capsys, *argv: str) -> dict:
    assert main(["bench", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def check_consistent(report: dict, workers: list[int]) -> None:
    assert [row["workers"] for row in report["loader"]] == workers
    throughputs = [row["samples_per_s"] for row in report["loader"]]
    throughputs += [report["stride"]["samples_per_s"], report["bare"]["samples_per_s"]]
    assert all(value > 0 for value in throughputs)
    assert report["ratio"] == pytest.approx(report["stride"]["samples_per_s"] / report["bare"]["samples_per_s"],
                                            rel=1e-3)
    for measured in (report["stride"], report["bare"]):
        assert measured["samples"] == report["steps"] * report["batch_size"]
        assert measured["samples_per_s"] == pytest.approx(measured["samples"] / measured["seconds"], rel=1e-3,
                                                          abs=1e-3)
        assert measured["cpu_seconds"] > 0
    assert report["ratio_by_cpu_time"] > 0  # reported on CPUs
    assert report["device"] and torch.__version__.startswith(report["versions"]["torch"])


@pytest.mark.slow
def test_bench_digits_cnn_end_to_end(capsys, digits_shards):
    report, cached = bench_json(capsys, "digits-cnn", "--set", f"data.path={digits_shards}", "model.channels=4",
                                "trainer.enable_progress_bar=false", "--batch-size", "32", "--steps", "4",
                                "--warmup-steps", "1", "--workers", "0,1", "--repeats", "2", "--cache", "none,memory")
    check_consistent(report, [0, 1])
    assert report["recipe"] == "digits-cnn" and report["batch_size"] == 32 and report["steps"] == 4
    assert report["accelerator"] == "cpu" and report["precision"] == "32-true" and report["channels_last"] is False
    assert len(report["stride"]["runs_samples_per_s"]) == 2 and len(report["bare"]["runs_samples_per_s"]) == 2
    check_consistent(cached, [0])  # a decoded cache is served by the training process: no worker counts
    assert (report["cache"], cached["cache"]) == ("none", "memory")
    for measured in (report, cached):  # headroom: the loader's rate at the trained worker count over training's
        [trained] = [row for row in measured["loader"] if row["workers"] == measured["recipe_workers"]]
        assert measured["loader_headroom"] == pytest.approx(
            trained["samples_per_s"] / measured["stride"]["samples_per_s"], rel=1e-2)


@pytest.mark.slow
def test_bench_tcn_on_synthetic_sequences(capsys):
    report = bench_json(capsys, "tcn-seqmnist-single", "--set", "model.channels=4", "model.num_blocks=2",
                        "trainer.enable_progress_bar=false", "--synthetic", "96", "--synthetic-shape", "1,8,8",
                        "--synthetic-encoding", "npy", "--batch-size", "16", "--steps", "3", "--warmup-steps", "1",
                        "--workers", "0")
    check_consistent(report, [0])
    assert report["dataset"].endswith("synthetic")


def test_text_report_and_missing_dataset(capsys, tmp_path):
    report = BenchReport(recipe="r", dataset="d", device="cpu x", accelerator="cpu", precision="32-true",
                         channels_last=False, compile=False, batch_size=8, steps=2, warmup_steps=1, repeats=1,
                         recipe_workers=0, loader=[{"workers": 0, "samples_per_s": 1000.0}],
                         stride={"samples_per_s": 90.0}, bare={"samples_per_s": 100.0}, ratio=0.9)
    text = report.text()
    assert "loader, 0 workers (recipe):" in text and "ratio stride/bare:" in text and "0.900" in text
    assert "data.cache none" in text and "loader headroom:" in text
    assert main(["bench", "digits-cnn", "--set", f"data.path={tmp_path / 'absent'}"]) == 2
    assert "--synthetic N" in capsys.readouterr().err


def test_auto_speed_options_on_cpu(digits_shards):
    config = load_config("digits-cnn", [f"data.path={digits_shards}", "trainer.accelerator=cpu"])
    assert config.trainer.precision == "auto" and resolve_precision(config.trainer) == "32-true"
    from stride.tasks import DataFacts, get_task

    task = get_task(config.task)
    module = task.module(config, DataFacts.of(task.datamodule(config)))
    assert resolve_channels_last(config.trainer, module.network) is False
    config.trainer.channels_last = True
    apply_speed_options(module, config.trainer)
    conv = next(m for m in module.network.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(module, ClassificationModule) and module.compiled_forward is None
    assert module(torch.rand(2, 1, 28, 28)).shape == (2, 10)
