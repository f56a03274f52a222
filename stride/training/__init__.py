"""The training core every launcher calls, and what it needs (trainer, speed options, checkpoints)."""

from stride.training.core import Launch, TrainOutcome, make_trainer, open_datamodule, train
from stride.training.history import EpochHistory, epoch_metrics

__all__ = ["EpochHistory", "Launch", "TrainOutcome", "epoch_metrics", "make_trainer", "open_datamodule", "train"]
