"""More than one machine, simulated on one: a Ray cluster of several nodes on 127.0.0.1 (Ray's own
`ray.cluster_utils.Cluster`), each node with a resource naming it. A 2-worker trial spreads over two
nodes, its ranks read disjoint shards, a node dies mid-trial and the trial finishes on the nodes
left, in the same MLflow run; then `stride submit` runs a search through the head's Jobs API."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import mlflow
import psutil
import pytest
import yaml
from conftest import free_port
from s3_server import bucket, s3_env, s3_server  # noqa: F401

from stride.config import load_config
from stride.datamodules.manifest import read_manifest
from stride.datamodules.transfer import copy_dataset
from stride.errors import StrideError
from stride.tracking.contract import SEARCH_ID_TAG
from stride.tuning import TrialResources, run_search
from stride.tuning.cluster import HEAD_NODE_RESOURCE, loopback_node

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_multi_worker_trials_drive_from_the_head_and_place_workers_as_configured():
    assert TrialResources(cpus=2, workers=2).trial_request()[HEAD_NODE_RESOURCE] > 0  # the driver: on the head
    assert HEAD_NODE_RESOURCE not in TrialResources(cpus=2).trial_request()  # a one-worker trial trains anywhere
    assert load_config("digits-cnn", ["trainer.placement_strategy=SPREAD"]).trainer.placement_strategy == "SPREAD"
    with pytest.raises(StrideError, match="placement_strategy"):
        load_config("digits-cnn", ["trainer.placement_strategy=ANYWHERE"])


class LoopbackCluster:
    """Ray nodes in this process's control, all on 127.0.0.1, with a private temp dir and free ports
    (other Rays may run on this machine: the head's agent would otherwise take Ray's fixed 52365)."""

    def __init__(self, head_cpus: int):
        from ray.cluster_utils import Cluster

        self.temp_dir = tempfile.mkdtemp(prefix="mn", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        dashboard_port = free_port()
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"
        with loopback_node():
            self.cluster = Cluster(initialize_head=True, head_node_args=self._args(
                head_cpus, "node_a", include_dashboard=True, dashboard_host="127.0.0.1",
                dashboard_port=dashboard_port, dashboard_agent_listen_port=free_port()))
        self.names = {self.cluster.head_node.node_id: "node_a"}

    def _args(self, cpus: int, name: str, **more) -> dict:
        # each node its own runtime-env folder, as its own disk: a node setting up a job's working dir
        # replaces the folder, which would pull it from under the job's driver on the head
        return dict(num_cpus=cpus, resources={name: 1}, node_ip_address="127.0.0.1", temp_dir=self.temp_dir,
                    runtime_env_dir_name=f"runtime_resources_{name}", **more)

    @property
    def address(self) -> str:
        return self.cluster.address

    def add(self, name: str):
        with loopback_node():
            node = self.cluster.add_node(**self._args(1, name))
        self.names[node.node_id] = name
        return node

    def kill(self, node) -> None:
        self.cluster.remove_node(node, allow_graceful=False)  # like a machine that loses power

    def shutdown(self) -> None:
        self.cluster.shutdown()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def two_node_cluster(monkeypatch):
    """Head `node_a` (2 CPUs: room to pack both workers, so only SPREAD separates them) and `node_b`."""
    import ray

    # Ray's processes (agents, job drivers) turn 127.0.0.1 into the machine's network address, where
    # nothing of this cluster listens, unless told that this is a one-machine cluster
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    nodes = LoopbackCluster(head_cpus=2)
    try:
        with loopback_node():  # the test's driver joins through the head's raylet, so node_b can die under it
            ray.init(address=nodes.address, log_to_driver=False)
        nodes.node_b = nodes.add("node_b")
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


def spec_file(tmp_path: Path, digits_shards: Path | str, name: str, epochs: int) -> str:
    spec = {"base": "digits-cnn",
            "overrides": [f"data.path={digits_shards}", "model.channels=4", f"trainer.max_epochs={epochs}",
                          # streamed (not cached): each rank reads its own shards
                          "data.batch_size=64", "data.cache=none", "data.num_workers=0",
                          "trainer.placement_strategy=SPREAD",
                          f"trainer.checkpoint_dir={tmp_path / 'checkpoints'}", f"tracking.experiment={name}",
                          "tracking.log_model=false"],
            "space": {"optim.lr": {"choice": [0.05]}}, "num_samples": 1, "scheduler": "fifo", "max_failures": 1}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def only_child_run(uri: str, experiment: str):
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    children = [r for r in runs if r.data.tags.get(SEARCH_ID_TAG) not in (None, r.info.run_id)]
    assert len(children) == 1, [r.info.run_name for r in children]  # continued, not duplicated
    return children[0]


@pytest.fixture(params=["shared-disk", "bucket"])
def place(request, digits_shards: Path, tmp_path: Path) -> tuple[str, str]:
    """(data.path, --storage): a folder every node sees, or a bucket and nothing shared between the nodes
    but the S3 endpoint (set up before the cluster, whose nodes take the environment when they start)."""
    if request.param == "shared-disk":
        return str(digits_shards), str(tmp_path / "ray")
    bucket = request.getfixturevalue("bucket")
    copy_dataset(digits_shards, f"s3://{bucket}/digits")
    return f"s3://{bucket}/digits", f"s3://{bucket}/ray"


def stored_files(storage: str, under: str) -> list[str]:
    import pyarrow.fs

    filesystem, base = pyarrow.fs.FileSystem.from_uri(storage)
    try:
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(f"{base}/{under}", recursive=True))
    except FileNotFoundError:
        return []
    return [info.path for info in infos]


@pytest.mark.slow
def test_spread_trial_survives_a_lost_node_and_submit_runs_on_the_cluster(place, two_node_cluster, mlflow_server,
                                                                          digits_shards, tmp_path, capsys):
    import pytorch_lightning as pl

    cluster = two_node_cluster
    data, storage = place
    reports, node_lost = tmp_path / "ranks.jsonl", tmp_path / "node-lost"

    class ReportRank(pl.Callback):  # a local class: Ray ships it to the workers by value
        """Each rank says where it runs and which shards it read; the first attempt waits before its
        second epoch until the test has killed a node."""

        def on_train_epoch_end(self, trainer, pl_module):
            import ray

            stream = trainer.datamodule.stream("train")
            read = [s.name for s in stream._slot_plan(0, stream.epoch - 1).shards]  # the epoch just streamed
            with reports.open("a") as handle:
                handle.write(json.dumps({"rank": trainer.global_rank, "world": trainer.world_size,
                                         "epoch": trainer.current_epoch, "shards": read,
                                         "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}) + "\n")

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1 and not node_lost.exists():
                (tmp_path / f"waiting-{trainer.global_rank}").touch()  # epoch 0 is over and reported
            deadline = time.monotonic() + 180
            while trainer.current_epoch == 1 and not node_lost.exists() and time.monotonic() < deadline:
                time.sleep(0.2)

    def epoch_reports() -> list[dict]:
        return [json.loads(line) for line in reports.read_text().splitlines()] if reports.exists() else []

    outcome: dict = {}

    def search() -> None:  # in a thread: Ray starts nodes only from the main thread, which kills and adds them
        try:
            outcome["result"] = run_search(
                spec_file(tmp_path, data, "multinode", epochs=2), tracking_uri=mlflow_server,
                storage=storage, name="multinode", resources=TrialResources(cpus=2, workers=2),
                extra_callbacks=[ReportRank()], verbose=0)
        except BaseException as err:  # re-raised below, in the test's thread
            outcome["error"] = err

    searching = threading.Thread(target=search, daemon=True)
    searching.start()
    deadline = time.monotonic() + 300
    def epoch_0_checkpointed() -> bool:  # both ranks wait at epoch 1, and Ray Train holds epoch 0's checkpoint
        waiting = all((tmp_path / f"waiting-{rank}").exists() for rank in (0, 1))
        return waiting and any("/checkpoint_" in path for path in stored_files(storage, "multinode/train"))

    while not epoch_0_checkpointed() and searching.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(epoch_reports()) == 2, outcome
    cluster.add("node_c")  # the replacement joins (an autoscaler's spare); then node_b dies mid-trial
    cluster.kill(cluster.node_b)
    # its worker outlives its raylet for a moment: let the ranks go on only once it is gone, or a fast machine
    # finishes epoch 1 on both before the loss is noticed (and the restart then repeats epoch 1)
    lost = {r["pid"] for r in epoch_reports() if cluster.names[r["node"]] == "node_b"}
    deadline = time.monotonic() + 60
    while any(psutil.pid_exists(pid) for pid in lost) and time.monotonic() < deadline:
        time.sleep(0.2)
    node_lost.touch()
    searching.join(timeout=300)
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]

    train_shards = {s.name for s in read_manifest(data).split("train").shards}
    by_epoch: dict[int, list[dict]] = {}
    for report in epoch_reports():
        report["node"] = cluster.names[report["node"]]
        by_epoch.setdefault(report["epoch"], []).append(report)
    for ranks in by_epoch.values():
        assert sorted(r["rank"] for r in ranks) == [0, 1] and {r["world"] for r in ranks} == {2}, ranks
        first, second = (set(r["shards"]) for r in ranks)
        assert not first & second and first | second == train_shards, ranks  # disjoint, and all of them
    assert {r["node"] for r in by_epoch[0]} == {"node_a", "node_b"}  # SPREAD: one worker per node
    assert sorted(by_epoch) == [0, 1] and {r["node"] for r in by_epoch[1]} == {"node_a", "node_c"}  # after the loss

    run = only_child_run(mlflow_server, "multinode")
    assert run.info.status == "FINISHED" and run.data.metrics["test_samples"] == 360
    steps = [m.step for m in mlflow.MlflowClient(mlflow_server).get_metric_history(run.info.run_id, "val_acc")]
    assert len(steps) == len(set(steps)) == 2  # epoch 1, then epoch 2 after the restart, each once
    resumed_from = run.data.tags["stride.resumed_from"]  # the trial's last Ray Train checkpoint: epoch 1
    assert resumed_from.rsplit("/", 1)[0].endswith(f"multinode/train/{result.rows[0]['trial_id']}"), resumed_from
    assert storage.removeprefix("s3://") in resumed_from  # in the bucket when the storage is one
    assert result.rows[0]["status"] == "completed"
    if storage.startswith("s3://"):
        return  # the Jobs API below is the same for both places

    # the same cluster through its head's Jobs API, as `stride submit -- stride tune ...` from a laptop
    from stride.pipelines.cli import main

    job_dir = tmp_path / "job"  # what is uploaded: the spec alone
    job_dir.mkdir()
    shutil.move(spec_file(tmp_path, digits_shards, "submitted", epochs=1), job_dir / "submitted.yaml")
    capsys.readouterr()
    code = main(["submit", "--address", cluster.dashboard, "--working-dir", str(job_dir), "--wait", "--",
                 sys.executable, "-m", "stride.pipelines.cli", "tune", "--config", "submitted.yaml",
                 "--tracking-uri", mlflow_server, "--storage", str(tmp_path / "ray"), "--name", "submitted"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    run = only_child_run(mlflow_server, "submitted")
    assert run.info.status == "FINISHED" and run.data.metrics["test_samples"] == 360
