"""The one typed config schema shared by train, tune, promote and bench.

Sections: data, model, optim, schedule, trainer, tracking, callbacks, loggers. Every section
forbids unknown keys; `model` carries `architecture` plus that architecture's own
hyper-parameters, checked against the registry (see `stride.architectures`).

`task` says which options `data` takes: each task owns a subclass of `DataConfig` and of
`StrideConfig` (its `data` typed with those options), registered by name in
`stride.config.task_configs`, so a new task adds its options without editing this file.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)


class Section(BaseModel):
    # inf and nan are refused everywhere: `optim.lr=.inf` would train on NaN losses
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(Section):
    """What every task's data takes; a task's own options extend it (e.g. detection's image_size)."""

    path: str = Field(description="dataset folder holding manifest.json and the shards")
    batch_size: PositiveInt = 100
    eval_batch_size: PositiveInt | None = None
    # loader processes; auto: one fewer than the CPUs the process may use, at most 8 (datamodules/workers.py)
    num_workers: NonNegativeInt | Literal["auto"] = "auto"
    shuffle_buffer: NonNegativeInt = 1000
    normalize: Literal["dataset", "none"] = "dataset"  # dataset: mean/std recorded in the manifest
    pin_memory: bool = True
    # none: stream and decode the shards every epoch; memory: decode each split once into host arrays
    # (a cache file beside the shards) and cut batches from them; device: hold the splits on the GPU
    cache: Literal["none", "memory", "device"] = "none"
    cache_budget_mb: PositiveInt | None = None  # refuse a cache larger than this; None: half the free memory


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)  # hyper-parameters: checked by the registry
    architecture: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimConfig(Section):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: PositiveFloat = 0.01
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleConfig(Section):
    name: Literal["constant", "step", "cosine"] = "constant"
    # step: multiply the lr by `gamma` at each fraction of the total steps (the seed: /10 at 70% and 90%); a list
    # gives each milestone its own factor (NiN on MNIST, docs/models.md D: /2 after 40 and /5 after 50 of 60 epochs)
    milestones: list[float] = [0.7, 0.9]
    gamma: PositiveFloat | list[PositiveFloat] = 0.1
    # warm-up: "linear" ramps over warmup_steps; "step" divides the lr by warmup_factor
    # once per warm-up milestone not yet reached (the TCN seed: x10 after 100 and 1000 steps)
    warmup: Literal["none", "linear", "step"] = "none"
    warmup_steps: NonNegativeInt = 0
    warmup_milestones: list[NonNegativeInt] = []
    warmup_factor: PositiveFloat = 10.0

    @field_validator("gamma", mode="before")
    @classmethod
    def _factors(cls, value: Any) -> Any:
        """One message for a bad factor, whether given alone or in a list (not one per member of the union)."""
        for factor in value if isinstance(value, list) else [value]:
            if isinstance(factor, bool) or not isinstance(factor, int | float) or not math.isfinite(factor) \
                    or factor <= 0:
                raise ValueError("expected a finite number greater than 0, or a list of them")
        return value

    @model_validator(mode="after")
    def _check(self) -> ScheduleConfig:
        if any(not 0 < m < 1 for m in self.milestones) or self.milestones != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing fractions of training in (0, 1), got {self.milestones}")
        if isinstance(self.gamma, list) and len(self.gamma) != len(self.milestones):
            raise ValueError(f"gamma: a list needs one factor per milestone ({len(self.milestones)}), "
                             f"got {len(self.gamma)}")
        if self.warmup_milestones != sorted(self.warmup_milestones):
            raise ValueError(f"warmup_milestones must be increasing step numbers, got {self.warmup_milestones}")
        return self


class TrainerConfig(Section):
    max_epochs: PositiveInt | None = 10
    max_steps: int = Field(default=-1, ge=-1)  # -1: bounded by max_epochs
    # a fraction of the training batches, or a number of them, per epoch (validation stays whole): for
    # searches and smoke runs that must finish in minutes on large datasets
    limit_train_batches: PositiveFloat | PositiveInt = 1.0
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: PositiveInt | Literal["auto"] = 1
    strategy: str = "auto"
    # where Ray puts the workers of `--workers N` / `--workers-per-trial N` (Ray's placement group
    # strategies): PACK fills a node first, SPREAD one worker per node where it can, STRICT_* always
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    # auto: bf16-mixed on CUDA GPUs that support it, 32-true elsewhere (see stride.training.speed)
    precision: Literal["auto", "32-true", "16-mixed", "bf16-mixed", "64-true"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"  # auto: on for networks with 2-d convolutions on a GPU
    compile: bool = False  # torch.compile the network for training (the logged model stays uncompiled)
    seed: int = 0
    deterministic: bool = False
    log_every_n_steps: PositiveInt = 50  # also the progress bar's refresh: each refresh waits for the GPU
    gradient_clip_val: PositiveFloat | None = None
    monitor: str | None = None  # None: the task's quality on the validation split (val_acc, val_ap, val_cider)
    monitor_mode: Literal["min", "max"] | None = None  # None: the task's (higher is better for all three)
    checkpoint_dir: str = "checkpoints"
    enable_progress_bar: bool = True


class TrackingConfig(Section):
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else the local store in the working directory
    experiment: str = "stride"
    run_name: str | None = None
    # true: export the tested network as an MLflow pt2 model when the run ends; false: no model; deferred:
    # log only its weights (weights/module.pt) and export the model when the run is promoted (search trials:
    # most are never promoted, and exporting is most of a short trial's logging time; docs/tuning.md)
    log_model: bool | Literal["deferred"] = True
    tags: dict[str, str] = {}


class ComponentConfig(Section):
    """A Lightning callback or logger by class name and its constructor arguments (stride.config.components)."""

    name: str
    args: dict[str, Any] = {}


class StrideConfig(Section):
    name: str = "unnamed"
    task: str = "classification"  # a registered task (stride.config.task_configs); its options type `data`
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    trainer: TrainerConfig = TrainerConfig()
    tracking: TrackingConfig = TrackingConfig()
    # more Lightning callbacks (e.g. EarlyStopping) and loggers (e.g. CSVLogger), built by the training core
    # for every launcher: `stride train`, trials, Ray Train workers
    callbacks: list[ComponentConfig] = []
    loggers: list[ComponentConfig] = []
