"""A small TCN and a small GRU learn the built-in digits read as pixel sequences, on a CPU.

The digits are kept at their native 8x8 (64 steps) so both train in seconds; the 784-step
setting of the study is the `tcn-digits` / `gru-digits` recipes (see docs/tcn.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stride.config import load_config
from stride.pipelines.train import train_and_record as train
from stride.tracking.store import fluent_tracking_uri

pytestmark = pytest.mark.slow  # end to end: real Lightning, MLflow, Ray or processes


@pytest.fixture(scope="module")
def digit_sequences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stride.datamodules.sources.digits import prepare_digits

    out = tmp_path_factory.mktemp("data") / "digits8"
    prepare_digits(out, size_px=8)
    return out


# (recipe, overrides, stated test accuracy on the 360 test digits)
SMALL_MODELS = {
    "tcn": ("tcn-digits", ["model.channels=16", "model.num_blocks=4", "model.kernel_size=3",
                           "model.dilation_schedule=exponential", "trainer.max_epochs=8"], 0.85),
    "gru": ("gru-digits", ["model.hidden_size=48", "trainer.max_epochs=8", "optim.lr=0.01"], 0.60),
}


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_small_sequence_model_learns_digit_sequences(name, digit_sequences, tmp_path, mlflow_server):
    recipe, overrides, stated = SMALL_MODELS[name]
    config = load_config(recipe, [f"data.path={digit_sequences}", "data.batch_size=32", *overrides,
                                  f"trainer.checkpoint_dir={tmp_path}", "trainer.enable_progress_bar=false",
                                  "tracking.experiment=tests-sequences", "tracking.log_model=false",
                                  "data.sequence_view=permuted", "data.permutation_seed=5"])
    result = train(config, tracking_uri=mlflow_server)
    assert result.test_metrics["test_acc"] >= stated, result.test_metrics
    import mlflow

    params = mlflow.MlflowClient(mlflow_server).get_run(result.run_id).data.params
    assert (params["data.sequence_view"], params["data.permutation_seed"]) == ("permuted", "5")


def test_a_recurrent_model_exports_without_warnings_and_computes_what_it_trained(digit_sequences, tmp_path,
                                                                                mlflow_server):
    import warnings

    import mlflow
    import numpy as np
    import torch

    from stride.training.checkpoints import load_module

    config = load_config("gru-digits", [f"data.path={digit_sequences}", "model.hidden_size=8", "trainer.max_epochs=1",
                                        f"trainer.checkpoint_dir={tmp_path}", "trainer.enable_progress_bar=false",
                                        "tracking.experiment=tests-sequences"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(config, tracking_uri=mlflow_server)
    assert not [w for w in caught if "_flat_weights" in str(w.message)]
    with fluent_tracking_uri(mlflow_server):  # exports nothing to later tests
        exported = mlflow.pytorch.load_model(result.model_uri)
        _, module = load_module(result.outcome.best_checkpoint)
        images = torch.from_numpy(np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32))
        with torch.no_grad():
            torch.testing.assert_close(exported(images), torch.softmax(module.eval()(images), dim=1))
