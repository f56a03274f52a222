"""A training resumed from a checkpoint goes on with the data order of the epoch it resumes at, exactly as
the uninterrupted run saw it: the shard streams and the cached splits draw their order from (seed, epoch),
and the epoch comes from the checkpoint, not from a fresh counter at 0, also in loader workers that
Lightning starts before it restores the epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl

from stride.config import load_config
from stride.training import Launch, train


class FirstBatchLabels(pl.Callback):
    def __init__(self) -> None:
        self.seen: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self.seen[trainer.current_epoch] = batch[1][:32].tolist()


@pytest.mark.parametrize("cache, workers", [("none", 0), ("none", 2), ("memory", 0)])
def test_a_resumed_training_sees_the_order_of_its_epoch_not_epoch_0_again(cache, workers, digits_shards: Path,
                                                                          tmp_path: Path):
    def fit(epochs: int, folder: str, resume: str | None = None) -> dict[int, list[int]]:
        config = load_config("digits-cnn", [f"data.path={digits_shards}", f"data.cache={cache}", "model.channels=4",
                                            f"data.num_workers={workers}",
                                            "data.batch_size=128", f"trainer.max_epochs={epochs}",
                                            "trainer.limit_train_batches=2",
                                            "trainer.enable_progress_bar=false"])
        labels = FirstBatchLabels()
        train(config, callbacks=[labels], launch=Launch(checkpoint_dir=str(tmp_path / folder), resume_checkpoint=resume,
                                                        test=True))
        return labels.seen

    whole = fit(3, "whole")
    assert whole[0] != whole[1] != whole[2]  # reshuffled every epoch
    first = fit(1, "first")
    assert first == {0: whole[0]}
    resumed = fit(3, "resumed", resume=str(tmp_path / "first" / "last.ckpt"))
    assert resumed == {1: whole[1], 2: whole[2]}
