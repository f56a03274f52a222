"""Population-based training end to end on an embedded Ray and a real MLflow server: the weaker trial
continues from the stronger one's checkpoint with perturbed values, in its own child run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import yaml

from stride.config.schema import OptimConfig
from stride.tracking.contract import SEARCH_ID_TAG, TRIAL_ID_TAG
from stride.tuning import run_search
from stride.tuning.pbt import ApplyTrialOptim, pbt_scheduler
from stride.tuning.spec import SchedulerSpec


def test_no_exploit_step_at_a_trials_last_epoch():
    scheduler = pbt_scheduler(SchedulerSpec(name="pbt"), {"optim.lr": [0.1, 0.01]}, time_attr="training_iteration",
                              last_epoch=3)
    # Ray's PBT would look at the population here (and pause or clone the trial); at the last epoch it never does
    assert scheduler.on_trial_result(None, None, {"training_iteration": 3, "val_acc": 0.1}) == "CONTINUE"


def test_a_cloned_trial_trains_with_its_own_values_and_forgets_the_other_trials_best(tmp_path: Path):
    group = {"lr": 0.5, "initial_lr": 0.5, "weight_decay": 0.1, "momentum": 0.5}
    own, other = tmp_path / "own", tmp_path / "other"
    checkpoint = SimpleNamespace(dirpath=str(own), best_model_path=str(other / "best-epoch=0.ckpt"),
                                 best_model_score=0.9)
    scheduler = SimpleNamespace(base_lrs=[0.5])
    trainer = SimpleNamespace(optimizers=[SimpleNamespace(param_groups=[group])], checkpoint_callback=checkpoint,
                              lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler)])
    ApplyTrialOptim(OptimConfig(name="sgd", lr=0.02, momentum=0.9, weight_decay=0.001)).on_train_start(trainer, None)
    assert group == {"lr": 0.5, "initial_lr": 0.02, "weight_decay": 0.001, "momentum": 0.9}
    assert scheduler.base_lrs == [0.02]
    assert (checkpoint.best_model_path, checkpoint.best_model_score) == ("", None)


@pytest.mark.slow
def test_pbt_exploit_continues_from_another_trials_checkpoint_with_perturbed_values(mlflow_server, digits_shards,
                                                                                      tmp_path: Path):
    # two trials, synchronised: after epoch 1 the weaker one must clone the stronger one, whatever their timing
    spec = {"base": "digits-cnn",
            "overrides": [f"data.path={digits_shards}", "model.channels=4", "trainer.max_epochs=2",
                          "data.batch_size=128", f"trainer.checkpoint_dir={tmp_path / 'checkpoints'}",
                          "tracking.experiment=pbt", "tracking.log_model=false"],
            "space": {"optim.lr": {"loguniform": [0.001, 0.3]}}, "num_samples": 2, "max_concurrent_trials": 2,
            "scheduler": {"name": "pbt", "perturbation_interval": 1, "quantile_fraction": 0.5,
                          "resample_probability": 0.0, "synchronous": True}}
    (tmp_path / "pbt.yaml").write_text(yaml.safe_dump(spec))
    result = run_search(str(tmp_path / "pbt.yaml"), tracking_uri=mlflow_server, storage=str(tmp_path / "ray"),
                        name="pbt", verbose=0)

    # Ray's record of the one exploit step: [target tag, clone tag, (epochs), clone's config, new config]
    policies = sorted((tmp_path / "ray" / "pbt").glob("pbt_policy_*.txt"))
    assert len(policies) == 1, [p.name for p in policies]
    exploited_id = policies[0].stem.removeprefix("pbt_policy_")
    *_, clone_config, new_config = json.loads(policies[0].read_text())

    client = mlflow.MlflowClient(mlflow_server)
    runs = {r.data.tags[TRIAL_ID_TAG]: r for r in client.search_runs(
        [client.get_experiment_by_name("pbt").experiment_id],
        filter_string=f"tags.`{SEARCH_ID_TAG}` = '{result.parent_run_id}'") if TRIAL_ID_TAG in r.data.tags}
    assert len(runs) == 2 and {r.info.status for r in runs.values()} == {"FINISHED"}  # one run per trial
    (clone_id,) = set(runs) - {exploited_id}
    exploited, clone = runs[exploited_id], runs[clone_id]
    assert float(clone.data.params["optim.lr"]) == pytest.approx(clone_config["optim.lr"])
    # the exploited trial restarted from the clone's epoch-1 checkpoint (Ray's first) ...
    resumed_from = Path(exploited.data.tags["stride.resumed_from"])
    assert f"_{clone_id}_" in resumed_from.parent.name and resumed_from.name == "checkpoint_000000"
    # ... with the clone's lr times Ray's perturbation factor (0.8 or 1.2), recorded on its own run
    new_lr = new_config["optim.lr"]
    assert round(new_lr / clone_config["optim.lr"], 9) in (0.8, 1.2)
    first, current = exploited.data.tags["stride.perturbed.optim.lr"].split(" -> ")
    assert first == exploited.data.params["optim.lr"] and float(current) == pytest.approx(new_lr)
    steps = [m.step for m in client.get_metric_history(exploited.info.run_id, "val_acc")]
    assert len(steps) == 2 == len(set(steps))  # epochs 1 and 2, none twice
    assert "test_acc" in exploited.data.metrics  # tested its own best checkpoint of epoch 2
    assert sorted(row["trial_id"] for row in result.rows) == sorted(runs)  # one leaderboard row per trial
