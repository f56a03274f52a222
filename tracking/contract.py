"""stride's MLflow contract: every name stride writes into MLflow and reads back, in one place.

A run written by one stride version is read by another (`stride promote` picks runs by these tags,
`stride predict` finds a model's task and labels through them, dashboards filter on them), so a
name here is an interface: rename one and older runs stop being found. Grouped by who reads them;
docs/tracking.md is the same contract for people, with who writes what.
"""

from __future__ import annotations

# -- a training run's identity: written when the run is created (tracking.run); promotion copies these
# onto the registered version (LINEAGE_TAGS) and the model card shows them; `stride promote` picks the
# task of an experiment's runs by TASK_TAG, and `stride predict` the task that reads a model
VERSION_TAG = "stride.version"  # also on a search's parent run
RECIPE_TAG = "stride.recipe"
TASK_TAG = "stride.task"
ARCHITECTURE_TAG = "stride.architecture"
GIT_COMMIT_TAG = "git.commit"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: nests a trial's run under its search in the UI

# -- liveness: the process that owns a RUNNING run (tracking.run writes them when it opens or continues the
# run), so that a later stride command (tracking.run.fail_dead_runs) tells a live run from a ghost
HOST_TAG = "stride.host"
PID_TAG = "stride.pid"
PROCESS_STARTED_TAG = "stride.process_started"
ENDED_BY_TAG = "stride.ended_by"  # set on a run that a later command marked FAILED

# -- the dataset a run trained on (tracking.recorder writes them): promotion re-evaluates on DATASET_PATH_TAG
# after checking DATASET_SHA256_TAG, `stride predict` reads class names from that dataset's manifest
DATASET_PATH_TAG = "dataset.path"
DATASET_NAME_TAG = "dataset.name"
DATASET_SHA256_TAG = "dataset.manifest_sha256"  # of the manifest, which holds every shard's sha256
DATASET_CONTEXT_TAG, TRAINING_CONTEXT = "mlflow.data.context", "training"  # on the run's MLflow dataset input
DATASET_DIGEST_CHARS = 32  # MLflow keeps at most 36 characters of a dataset input's digest

# -- params: the flattened config (`optim.lr`, `model.channels`, ...), plus
NUM_PARAMS_PARAM = "model.num_params"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
# a continued run keeps its first values as params; values changed since (PBT's explore step) are tags
# PERTURBED_PREFIX + key: "first -> ... -> current" (the last MAX_PERTURBED_CHARS characters)
PERTURBED_PREFIX = "stride.perturbed."
MAX_PERTURBED_CHARS = 5000
# a search's parent run: the space as SPACE_PARAM_PREFIX + key, the spec's settings as SEARCH_PARAM_PREFIX + field
SPACE_PARAM_PREFIX = "space."
SEARCH_PARAM_PREFIX = "search."

# -- metrics: Lightning logs the module's own (train_*, val_*, test_*, lr) through tracking.recorder's logger
EPOCH_TIME_METRIC = "epoch_time_s"  # per epoch, training and validation: `stride bench --search` reads it
WALL_TIME_METRIC = "wall_time_s"  # a finished run's whole time, then where it went (phase_time_metric)
PHASES = ("setup", "fit", "test", "logging")


def phase_time_metric(phase: str) -> str:
    """`time_setup_s` (run created to fit start: trainer, data), `time_fit_s` (training and validation),
    `time_test_s`, `time_logging_s` (plots, the model)."""
    return f"time_{phase}_s"


def best_metric(monitor: str) -> str:
    """The monitored metric at the checkpoint kept (a training run) or of the best trial (a search's parent
    run): what promotion compares before the metric's last value."""
    return f"best_{monitor}"


# -- artifacts of a training run
CONFIG_ARTIFACT = "config.yaml"  # the resolved config; promotion hashes it into the version's lineage
PLOTS_FOLDER = "plots"  # the task's figures (also a search's and an evaluation's)
# the trained module as a weights-only stride checkpoint, beside the exported program that hides its feature
# maps: `stride explain`, a deferred export and a decoder rebuilt with options read it
# (stride.training.checkpoints.load_module)
MODULE_ARTIFACT = "weights/module.pt"
# the logged pt2 model (`runs:/RUN_ID/model`); a task's labels file (Serving.labels_artifact, e.g. a captioner's
# vocabulary) goes beside it
MODEL_NAME = "model"

# -- the model of a training run: promotion selects runs that have one (MODEL_URI_TAG or DEFERRED_MODEL_TAG)
MODEL_URI_TAG = "stride.model_uri"  # models:/<model id> of the logged model; also a registered version's tag
DEFERRED_MODEL_TAG = "stride.model_deferred"  # weights only (tracking.log_model=deferred): MODULE_ARTIFACT
EXPORTED_LATER_TAG = "stride.model_exported_from"  # a deferred model exported at promotion, from MODULE_ARTIFACT
BEST_CHECKPOINT_TAG = "best_checkpoint"  # local path of the checkpoint kept, for `stride explain --checkpoint`
# what a model's readers verify before loading anything (docs/registry.md, "Model integrity"): both live in the
# tracking store, never in the artifact store whose files they vouch for
MODULE_SHA256_TAG = "stride.module_sha256"  # run tag: sha256 of MODULE_ARTIFACT as logged
MODEL_FILES_TAG = "stride.model_files_sha256"  # logged-model tag: JSON {file path: sha256} of every file logged

# -- searches (tuning): a trial's run is found again by RUN_KEY_TAG (search id:trial id) after a restart
RUN_KEY_TAG = "stride.run_key"
SEARCH_ID_TAG = "stride.search_id"  # on the parent run itself and every trial's run; promotion's --search
TRIAL_ID_TAG = "stride.trial_id"
RESUMED_FROM_TAG = "stride.resumed_from"  # the checkpoint a continued run last resumed from
KIND_TAG, SEARCH_KIND = "stride.kind", "search"  # the parent run
SEARCH_SPEC_TAG = "stride.search_spec"
SEARCH_NAME_TAG = "stride.search_name"  # what `stride tune --resume NAME` takes
BEST_TRIAL_ID_TAG = "stride.best_trial_id"
BEST_RUN_ID_TAG = "stride.best_run_id"
SEARCH_SPEC_ARTIFACT = "search_spec.yaml"
LEADERBOARD_ARTIFACT = "leaderboard.csv"
# the sha256 of every file of the search's saved Ray state, checked before `--resume` lets Ray unpickle it
STATE_DIGESTS_ARTIFACT = "search_state_sha256.json"
STATE_DIGESTS_TAG = "stride.state_sha256"  # the sha256 of that artifact

# -- studies (tuning.study_run): a study is a search over the rows of a table of the research
STUDY_TAG = "stride.study"  # on the parent run: the study's name; `stride study report --run` needs it
STUDY_HARDWARE_TAG = "stride.study_hardware"  # on each trial's run: its devices; on the parent: all rows''
STUDY_ROW_TAG = "stride.study_row"  # on each trial's run: the row it trained
STUDY_ARTIFACT = "study/study.json"  # on the parent run: the study and its scale
STUDY_REPORT_ARTIFACT = "study/report.md"  # on the parent run: measured beside published (also a plot)

# -- experiments stride creates besides the configs' `tracking.experiment`
BENCH_EXPERIMENT = "stride-bench"  # `stride bench`'s runs of the stride path
EVALUATIONS_EXPERIMENT = "evaluations"  # `stride evaluate`'s default: one run per evaluation

# -- an evaluation run (`stride evaluate`); it also carries DATASET_PATH_TAG, DATASET_SHA256_TAG and TASK_TAG
EVALUATED_MODEL_TAG = "stride.evaluated_model"
EVALUATED_RUN_ID_TAG = "stride.evaluated_run_id"
SPLIT_TAG = "stride.split"
REGISTERED_MODEL_TAG = "stride.registered_model"
MODEL_VERSION_TAG = "stride.model_version"

# -- the Model Registry: aliases moved only by promotion and rollback
CHAMPION_ALIAS = "champion"


def previous_alias(alias: str) -> str:
    """Where a replaced holder of `alias` goes: @previous for @champion, @<alias>-previous otherwise."""
    return "previous" if alias == CHAMPION_ALIAS else f"{alias}-previous"


# a registered version's tags (its lineage), written at promotion; `stride registry show` lists them
RUN_ID_TAG = "stride.run_id"  # read back to tell whether a run already is the champion
CONFIG_SHA256_TAG = "stride.config_sha256"
SELECTION_TAG = "stride.selection"
GATE_TAG = "stride.gate"
FORCED_TAG = "stride.forced"
EVALUATION_PREFIX = "eval."  # + each metric of the promotion's re-evaluation
REPLACED_VERSION_TAG = "stride.replaced_version"
REPLACED_RUN_ID_TAG = "stride.replaced_run_id"
REPLACED_EVALUATION_PREFIX = "stride.replaced_eval."
CLASS_NAMES_TAG = "stride.class_names"  # JSON list; `stride predict` reads it first
RESTORED_OVER_TAG = "stride.restored_over"  # written by rollback
LINEAGE_TAGS = (TASK_TAG, ARCHITECTURE_TAG, RECIPE_TAG, DATASET_NAME_TAG, GIT_COMMIT_TAG)  # copied from the run

# a registry lock is a registered model `<model>` + LOCK_SUFFIX with these tags (registry.lock)
LOCK_SUFFIX = ".stride-lock"
LOCK_TAG = "stride.lock"
LOCK_OWNER_TAG = "stride.lock.owner"
LOCK_EXPIRES_TAG = "stride.lock.expires_at"


def export_lock_name(run_id: str) -> str:
    """The lock under which a deferred model is exported once, however many promotions want it."""
    return f"stride-export-{run_id}"
