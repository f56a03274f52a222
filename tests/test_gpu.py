"""The GPU acceptance lane: `python -m pytest -m gpu` on a machine with CUDA; skipped without it.

It proves the paths no CPU run reaches: bf16-mixed, channels_last, `trainer.compile`,
`data.cache: device`, DDP over every visible GPU (two processes sharing the GPU where there is one),
a detector at 512 px and a captioner at 224 px, and `stride bench` against a bare loop. It needs
torch, Lightning, torchvision and stride's light dependencies only: no Ray, no MLflow (GPU machines
often lack both). With STRIDE_GPU_REPORT=FILE it writes every figure it measured there as JSON,
for docs/benchmarks.md. STRIDE_LANE_ACCELERATOR=cpu runs the same plumbing on a CPU (slowly, without the
GPU-only checks), to try the lane before spending a GPU lease on it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

ACCELERATOR = os.environ.get("STRIDE_LANE_ACCELERATOR", "gpu")
ON_GPU = ACCELERATOR == "gpu"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(),
                                                  reason="the GPU lane needs a CUDA device")]

MIN_BENCH_RATIO = 0.9  # stride's training path against the bare loop on the same network and batches


class Figures(dict):
    """What the lane measured, rewritten to $STRIDE_GPU_REPORT after each figure (a lane cut short keeps its
    figures so far)."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if target := os.environ.get("STRIDE_GPU_REPORT"):
            Path(target).write_text(json.dumps(self, indent=2))


@pytest.fixture(scope="module")
def figures() -> Figures:
    found = Figures()
    found["machine"] = {"device": torch.cuda.get_device_name(0) if ON_GPU else "cpu",
                        "gpus": torch.cuda.device_count(), "torch": torch.__version__, "cuda": torch.version.cuda}
    return found


def recipe(name: str, data: Path, tmp_path: Path, *overrides: str):
    from stride.config.loading import load_config

    return load_config(name, [f"data.path={data}", f"trainer.checkpoint_dir={tmp_path / 'checkpoints'}",
                              "trainer.enable_progress_bar=false", f"trainer.accelerator={ACCELERATOR}", *overrides])


class SeenOnDevice:
    """Records what the first 2-d convolution receives and returns during training, and every step's loss."""

    def __init__(self) -> None:
        self.input_dtype = self.output_dtype = None
        self.input_shape: tuple[int, ...] = ()
        self.channels_last = False
        self.batch_device = ""
        self.losses: list[float] = []

    def callback(self):
        import pytorch_lightning as pl

        seen = self

        class Recorder(pl.Callback):
            def on_fit_start(self, trainer, pl_module):
                conv = next(m for m in pl_module.modules() if isinstance(m, torch.nn.Conv2d))
                conv.register_forward_hook(seen.hook)

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                first = batch[0] if isinstance(batch, (list, tuple)) else batch
                seen.batch_device = str(getattr(first, "device", ""))

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                seen.losses.append(float(loss))

        return Recorder()

    def hook(self, module, inputs, output) -> None:
        if module.training and self.input_dtype is None:
            self.input_dtype, self.output_dtype = inputs[0].dtype, output.dtype
            self.input_shape = tuple(inputs[0].shape)
            self.channels_last = inputs[0].is_contiguous(memory_format=torch.channels_last)


def test_bf16_channels_last_device_cache_train_and_test_the_digits(digits_shards, tmp_path, figures):
    from stride.training import train

    config = recipe("digits-cnn", digits_shards, tmp_path, "data.cache=device", "trainer.max_epochs=6")
    seen = SeenOnDevice()
    started = time.perf_counter()
    outcome = train(config, callbacks=[seen.callback()])
    if ON_GPU:
        assert seen.batch_device.startswith("cuda")  # the device cache hands batches already on the GPU
        assert seen.output_dtype == torch.bfloat16  # precision auto -> bf16-mixed autocast
        assert seen.channels_last  # channels_last auto -> on for Conv2d networks on a GPU
    assert outcome.test_metrics["test_acc"] > 0.9
    figures["digits_bf16_device_cache"] = {"epochs": 6, "test_acc": outcome.test_metrics["test_acc"],
                                           "wall_s": round(time.perf_counter() - started, 1)}


def test_compiled_training_matches_eager_quality(digits_shards, tmp_path, figures):
    from stride.training import train

    config = recipe("digits-cnn", digits_shards, tmp_path, "data.cache=device", "trainer.max_epochs=4",
                    "trainer.compile=true")
    started = time.perf_counter()
    outcome = train(config)
    assert outcome.test_metrics["test_acc"] > 0.85
    figures["digits_compiled"] = {"epochs": 4, "test_acc": outcome.test_metrics["test_acc"],
                                  "wall_s_with_compilation": round(time.perf_counter() - started, 1)}


def train_rank(rank: int, world: int, port: int, config_dict: dict[str, Any], out: str) -> None:
    """One DDP rank: its own GPU where there are enough, else a share of GPU 0 over gloo (NCCL refuses two ranks
    on one device)."""
    from pytorch_lightning.strategies import DDPStrategy

    from stride.config.loading import validate
    from stride.training import Launch, train

    gpus = torch.cuda.device_count() if ON_GPU else 0
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), NODE_RANK=str(rank),
                      LOCAL_RANK="0")
    backend = "nccl" if gpus >= world else "gloo"
    launch = Launch(strategy=DDPStrategy(process_group_backend=backend), devices=[rank % gpus] if gpus else 1,
                    trainer_overrides={"num_nodes": world})
    outcome = train(validate(config_dict, "gpu lane"), launch=launch)
    Path(f"{out}.{rank}").write_text(json.dumps({"test_metrics": outcome.test_metrics, "backend": backend,
                                                 "wall_s": outcome.wall_time_s}))


def test_ddp_over_every_gpu_or_two_ranks_sharing_one(digits_shards, tmp_path, figures):
    import torch.multiprocessing as mp
    from conftest import free_port

    from stride.config.loading import config_to_dict

    world = max(2, torch.cuda.device_count() if ON_GPU else 0)
    config = recipe("digits-cnn", digits_shards, tmp_path, "trainer.max_epochs=4", "data.cache=none")
    out = str(tmp_path / "rank")
    mp.spawn(train_rank, args=(world, free_port(), config_to_dict(config), out), nprocs=world, join=True)
    ranks = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(world)]
    assert all(r["test_metrics"] == ranks[0]["test_metrics"] for r in ranks)  # metrics synchronised across ranks
    assert ranks[0]["test_metrics"]["test_acc"] > 0.85
    figures["ddp"] = {"ranks": world, "backend": ranks[0]["backend"], "test_acc": ranks[0]["test_metrics"]["test_acc"],
                      "wall_s": round(max(r["wall_s"] for r in ranks), 1)}


def few_steps(config, steps: int, callbacks=()) -> float:
    """Train `steps` steps without validation or testing; the seconds per step of the last half (after warm-up)."""
    import pytorch_lightning as pl

    from stride.training import Launch, train

    marks: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, *args):
            if ON_GPU:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    launch = Launch(test=False, trainer_overrides=dict(max_epochs=-1, max_steps=steps, limit_val_batches=0,
                                                       num_sanity_val_steps=0))
    train(config, callbacks=[Clock(), *callbacks], launch=launch)
    half = len(marks) // 2
    return (marks[-1] - marks[half]) / max(1, len(marks) - 1 - half)


@pytest.fixture(scope="module")
def faces_shards(tmp_path_factory):
    from stride.datamodules.sources.faces import prepare_faces

    out = tmp_path_factory.mktemp("faces") / "faces"
    prepare_faces(out, train_images=64, val_images=16, val_size=16)
    return out


@pytest.fixture(scope="module")
def captions_shards(tmp_path_factory):
    from stride.datamodules.sources.shapes_captions import prepare_shapes_captions

    out = tmp_path_factory.mktemp("captions") / "captions"
    prepare_shapes_captions(out, train_images=128, val_images=16, val_size=16, min_count=1)
    return out


@pytest.mark.parametrize("architecture", ["facenet_v1_0", "facenet_v1_1"])
def test_a_detector_trains_at_512_px(faces_shards, tmp_path, figures, architecture):
    config = recipe("faces-facenet-v1-0", faces_shards, tmp_path, "data.image_size=512", "data.batch_size=8",
                    f"model.architecture={architecture}")
    seen = SeenOnDevice()
    step_s = few_steps(config, 8, [seen.callback()])
    assert seen.input_shape[-2:] == (512, 512) and (seen.output_dtype == torch.bfloat16 or not ON_GPU)
    assert all(map(torch.isfinite, torch.tensor(seen.losses)))
    figures[f"detector_{architecture}_512px"] = {"batch": 8, "step_s": round(step_s, 4),
                                                 "images_per_s": round(8 / step_s, 1)}


@pytest.mark.parametrize("recipe_name", ["caption-gru-shapes", "caption-tcn-shapes"])
def test_a_captioner_trains_at_224_px(captions_shards, tmp_path, figures, recipe_name):
    config = recipe(recipe_name, captions_shards, tmp_path, "data.image_size=224", "data.batch_size=32")
    seen = SeenOnDevice()
    step_s = few_steps(config, 8, [seen.callback()])
    assert seen.input_shape[-2:] == (224, 224) and (seen.output_dtype == torch.bfloat16 or not ON_GPU)
    assert all(map(torch.isfinite, torch.tensor(seen.losses)))
    figures[f"{recipe_name}_224px"] = {"batch": 32, "step_s": round(step_s, 4), "images_per_s": round(32 / step_s, 1)}


# recipe, batch size, the data's image shape (random shards of it), steps
BENCHES = [("digits-cnn", 512, None, 200), ("cifar10-resnet20", 128, (3, 32, 32), 200),
           ("tcn-seqmnist-single", 100, (1, 28, 28), 100)]


@pytest.mark.parametrize("name,batch_size,shape,steps", BENCHES, ids=[b[0] for b in BENCHES])
def test_bench_stride_keeps_up_with_a_bare_loop(digits_shards, tmp_path, figures, name, batch_size, shape, steps):
    from stride.benchmarking import run_benchmark
    from stride.benchmarking.synthetic import write_synthetic_images

    data = digits_shards if shape is None else write_synthetic_images(tmp_path / "synthetic", 10_000, shape=shape,
                                                                      encoding="npy")
    config = recipe(name, data, tmp_path, f"data.batch_size={batch_size}", "data.cache=device")
    if not ON_GPU:  # the plumbing only
        steps = 3
    report = run_benchmark(config, steps=steps, warmup_steps=20 if ON_GPU else 1, repeats=2, record=False)
    figures[f"bench_{name}"] = {"batch": batch_size, "precision": report.precision,
                                "channels_last": report.channels_last, "stride_samples_per_s": report.stride,
                                "bare_samples_per_s": report.bare, "ratio": report.ratio,
                                "loader": report.loader}
    if ON_GPU:  # a CPU's figures are docs/benchmarks.md's own table
        assert report.ratio >= MIN_BENCH_RATIO, report.text()
