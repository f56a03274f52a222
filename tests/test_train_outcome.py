"""The training core hands its launcher what the launcher publishes (stride.tracking.publish): the module as
tested, holding the best checkpoint's weights, and the core's own epoch history; no MLflow needed."""

from __future__ import annotations

from pathlib import Path

import torch

from stride.config import load_config
from stride.training import Launch, train


def test_the_outcome_holds_the_tested_module_with_the_best_checkpoints_weights(digits_shards: Path, tmp_path: Path):
    # the lowest val_acc wins, so the checkpoint kept is rarely the last epoch's
    config = load_config("digits-cnn", [f"data.path={digits_shards}", "model.channels=4", "data.batch_size=128",
                                        "trainer.max_epochs=2", "trainer.limit_train_batches=2",
                                        "trainer.monitor_mode=min", "trainer.enable_progress_bar=false"])
    outcome = train(config, launch=Launch(checkpoint_dir=str(tmp_path)))
    best = torch.load(outcome.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    tested = outcome.module.state_dict()
    assert best.keys() == tested.keys()
    assert all(torch.equal(best[key], tested[key].cpu()) for key in best)
    assert [row["epoch"] for row in outcome.history] == [0, 1]
    assert outcome.best_score is not None and outcome.test_metrics["test_samples"] == 360
