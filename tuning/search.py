"""Running a search end to end: checks, Ray Tune, the MLflow parent run, the leaderboard; and resuming.

The experiment folder (`STORAGE/NAME/`) holds Tune's state plus `stride_search.json`
(resolved spec, tracking URI, resources, parent run id), so `--resume NAME` continues the
same search into the same parent run. The folder is not trusted: the resume finds that run by
the search's name in the user's tracking store and checks the folder against its digests.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from mlflow.tracking import MlflowClient

from stride.errors import StrideError
from stride.names import plain_name, safe_filename
from stride.tasks import get_task
from stride.tracking.contract import BEST_RUN_ID_TAG, BEST_TRIAL_ID_TAG, LEADERBOARD_ARTIFACT, PLOTS_FOLDER, best_metric
from stride.tracking.run import fail_dead_runs
from stride.tracking.store import check_reachable, ensure_experiment, resolve_tracking_uri
from stride.training import open_datamodule
from stride.tuning import leaderboard, runs
from stride.tuning.cluster import TrialResources, keep_credentials_out_of_ray, max_concurrency, ray_session
from stride.tuning.distributed import storage_root
from stride.tuning.integrity import CheckpointRefused, record_state, refuse_unloadable_checkpoints, verify_state
from stride.tuning.space import TIME_ATTR
from stride.tuning.spec import ROW_KEY, ResolvedSearch, applicable_params, load_search, trial_count

META_FILE = "stride_search.json"
DEFAULT_STORAGE = "ray_results"


@dataclass
class SearchResult:
    name: str
    path: str
    parent_run_id: str
    tracking_uri: str
    metric: str
    best_trial_id: str | None
    best_run_id: str | None
    best_metric: float | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    interrupted: bool = False
    experiment_id: str = ""

    def table(self) -> str:
        return leaderboard.format_table(self.rows, self.columns)


def _filesystem(storage: str):
    """pyarrow filesystem and root path for a local folder or a URI (s3://, gs://), as Tune uses."""
    import pyarrow.fs

    if "://" in storage:
        return pyarrow.fs.FileSystem.from_uri(storage)
    return pyarrow.fs.LocalFileSystem(), storage


def read_record(storage: str, name: str) -> dict[str, Any] | None:
    import pyarrow.fs

    fs, root = _filesystem(storage)
    path = f"{root}/{name}/{META_FILE}"
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as handle:
        return json.loads(handle.read().decode())


def write_record(storage: str, name: str, record: dict[str, Any]) -> None:
    fs, root = _filesystem(storage)
    fs.create_dir(f"{root}/{name}", recursive=True)
    with fs.open_output_stream(f"{root}/{name}/{META_FILE}") as handle:
        handle.write(json.dumps(record, indent=1).encode())


def list_searches(storage: str) -> list[str]:
    import pyarrow.fs

    fs, root = _filesystem(storage)
    if fs.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        return []
    found = fs.get_file_info(pyarrow.fs.FileSelector(root))
    return sorted(info.base_name for info in found if info.type == pyarrow.fs.FileType.Directory
                  and fs.get_file_info(f"{info.path}/{META_FILE}").type == pyarrow.fs.FileType.File)


def run_search(spec: str | ResolvedSearch, *, overrides: Sequence[str] = (), tracking_uri: str | None = None,
               storage: str = DEFAULT_STORAGE, name: str | None = None, address: str | None = None,
               resources: TrialResources = TrialResources(), spec_overrides: dict[str, Any] | None = None,
               extra_callbacks: Sequence[pl.Callback] = (), verbose: bool = False,
               tune_callbacks: Sequence[Any] = ()) -> SearchResult:
    """Check everything, run the search on Ray, record it in MLflow and return the leaderboard.

    `spec` is a built-in spec name, a YAML path or an already loaded search; `overrides`
    are `--set` items for the base config (e.g. data.path=...); `spec_overrides` replace
    spec fields (e.g. {"num_samples": 4}); `tune_callbacks` are extra Tune callbacks of the driver.
    """
    started = time.perf_counter()
    storage = storage_root(storage)
    search = spec if isinstance(spec, ResolvedSearch) else load_search(spec, list(overrides), spec_overrides)
    base = search.config_for({}, "base")
    uri = resolve_tracking_uri(tracking_uri or base.tracking.uri)
    check_reachable(uri)
    check_datasets(search)
    name = plain_name(name, "--name") if name else f"{safe_filename(search.spec.name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    if read_record(storage, name) is not None:
        raise StrideError(f"search {name!r} already exists in {storage}; continue it with --resume {name} "
                          "or choose another --name")
    parent = None
    try:
        with ray_session(address, state_api=resources.workers > 1, verbose=verbose):
            concurrency = max_concurrency(resources, search.spec.max_concurrent_trials)
            fail_dead_runs(MlflowClient(uri), ensure_experiment(uri, base.tracking.experiment))
            parent = runs.start_parent(uri, base.tracking.experiment, name, search.spec.model_dump(mode="json"),
                                       {d.key: d.describe() for d in search.dimensions})
            write_record(storage, name, {"name": name, "search": search.to_dict(), "tracking_uri": uri,
                                         "parent_run_id": parent, "resources": asdict(resources)})
            tuner = _tuner(search, uri, parent, resources, storage, name, concurrency, extra_callbacks, verbose,
                           tune_callbacks)
            return _finish(tuner.fit(), search, uri, parent, name, storage, started)
    except BaseException as stop:
        _close_after_stop(uri, parent, storage, name, stop)
        raise


def check_datasets(search: ResolvedSearch) -> None:
    """Hash every dataset the trials read, once, here in the driver (trials then check sizes only), and
    decode the splits of a cached one (`data.cache`), so that trials only read that cache."""
    starts: list[dict[str, Any]] = [{ROW_KEY: row} for row in search.row_raws] or [{}]  # a study: every row's
    paths: dict[str, dict[str, Any]] = {}  # dataset -> a config start that reads it
    for start in starts:
        paths.setdefault(search.config_for(start, "base").data.path, start)
    for dim in search.dimensions:
        if dim.key == "data.path":
            for path in dim.args:
                paths.setdefault(path, starts[0])
    for path, start in sorted(paths.items()):
        datamodule = open_datamodule(search.config_for({**start, "data.path": path}, "base"))
        if datamodule.cache != "none":
            datamodule.build_cache()


def resume_search(name: str, *, storage: str = DEFAULT_STORAGE, address: str | None = None,
                  extra_callbacks: Sequence[pl.Callback] = (), verbose: bool = False,
                  tracking_uri: str | None = None, trust_storage: bool = False) -> SearchResult:
    """Continue an interrupted search: finished trials stay, unfinished and errored ones go on from
    their checkpoints, in the same MLflow parent and child runs.

    The saved state is unpickled by Ray, so it is first checked against the digests the search
    recorded in its MLflow parent run (`tuning.integrity`). That run is looked up by the search's
    name in the user's tracking store (`tracking_uri`, else $MLFLOW_TRACKING_URI, else ./mlruns.db),
    never in one the storage folder names: whoever can write the folder could name a store of their
    own. `trust_storage` skips the digests, not the lookup."""
    started = time.perf_counter()
    storage = storage_root(storage)
    record = read_record(storage, plain_name(name, "--resume"))
    if record is None:
        raise StrideError(f"no search {name!r} in {storage} (searches there: "
                          f"{', '.join(list_searches(storage)) or 'none'}; pass --storage if it lives elsewhere)")
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    parent = _recorded_parent(uri, storage, name, record.get("parent_run_id"))
    if not trust_storage:
        verify_state(uri, parent, storage, name)
    refuse_unloadable_checkpoints(storage, name)
    search = ResolvedSearch.from_dict(record["search"])  # JSON, and verified: read without unpickling
    resources = TrialResources(**record["resources"])
    check_datasets(search)
    try:
        with ray_session(address, state_api=resources.workers > 1, verbose=verbose):
            from ray import tune

            max_concurrency(resources, search.spec.max_concurrent_trials)
            runs.reopen_parent(uri, parent)
            trainable = _trainable(search, uri, parent, resources, storage, name, extra_callbacks)
            tuner = tune.Tuner.restore(f"{storage}/{name}", trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
            return _finish(tuner.fit(), search, uri, parent, name, storage, started)
    except BaseException as stop:
        _close_after_stop(uri, parent, storage, name, stop)
        raise


def _recorded_parent(uri: str, storage: str, name: str, recorded: str | None) -> str:
    """The search's parent run, found by name in the user's tracking store; the folder's record only picks
    among that store's searches of the name (one per storage folder)."""
    found = runs.parents_named(uri, name)
    if not found:
        raise StrideError(f"no search named {name!r} in the MLflow tracking store {uri}; resume with the "
                          "--tracking-uri (or $MLFLOW_TRACKING_URI) the search was tracked in. stride does not take "
                          "it from the storage folder, which others may be able to write")
    if recorded not in found:
        raise StrideError(f"{storage}/{name}/{META_FILE} names MLflow run {recorded}, which is not a search named "
                          f"{name!r} in {uri} (those are: {', '.join(found)}); the folder does not belong to this "
                          "store or was altered, so nothing was loaded")
    return recorded


def _trainable(search, uri, parent, resources, storage, name, extra_callbacks):
    from ray import tune

    from stride.tuning.trial import TrialSetup, run_trial

    keep_credentials_out_of_ray()  # before Tune registers the trainable's actor class with its runtime env
    setup = TrialSetup(search, uri, parent, resources, storage, name, tuple(extra_callbacks))
    return tune.with_resources(tune.with_parameters(run_trial, setup=setup), resources.trial_request())


def _tuner(search: ResolvedSearch, uri, parent, resources, storage, name, concurrency, extra_callbacks, verbose,
           tune_callbacks=()):
    from ray import tune

    from stride.tuning.space import param_space, scheduler, search_algorithm

    spec = search.spec
    base = search.config_for({}, "base")
    return tune.Tuner(
        _trainable(search, uri, parent, resources, storage, name, extra_callbacks),
        param_space=param_space(spec, search.dimensions),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, search_alg=search_algorithm(spec, concurrency),
                                    scheduler=scheduler(spec, search.dimensions, base),
                                    num_samples=spec.num_samples,
                                    time_budget_s=spec.time_budget_s,
                                    # a finished trial's process takes the next trial: torch, Lightning and
                                    # MLflow are imported, and MLflow's store opened, once per slot, not per trial
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, verbose=2 if verbose else 0,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=checkpoint_config(spec),
            callbacks=[*_callbacks(search, uri, parent, verbose), *tune_callbacks]))


def checkpoint_config(spec):
    """Keep each trial's best `keep_checkpoints` by the metric; under PBT every checkpoint, since an
    exploit step restarts a trial from another trial's checkpoint, which that trial may have moved past
    (and a pruned one would fail the restarted trial)."""
    from ray import tune

    if spec.scheduler.name == "pbt":
        return tune.CheckpointConfig(num_to_keep=None)
    return tune.CheckpointConfig(num_to_keep=spec.keep_checkpoints, checkpoint_score_attribute=spec.metric,
                                 checkpoint_score_order=spec.mode)


def _callbacks(search: ResolvedSearch, uri: str, parent: str, verbose: bool) -> list:
    """The CSV and JSON result logs the leaderboard reads, closing stopped trials' runs, and progress lines."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from stride.tuning.progress import TrialProgress

    base = search.config_for({}, "base")
    callbacks = [CSVLoggerCallback(), JsonLoggerCallback(), runs.CloseStoppedTrialRuns(uri, parent, base)]
    if not verbose:
        assert search.spec.metric is not None, "set by load_search"
        callbacks.append(TrialProgress(search.spec.metric, base.trainer.max_epochs or 0,
                                       trial_count(search.spec, search.dimensions)))
    return callbacks


class SearchStopped(KeyboardInterrupt):
    """A signal stopped the search before Tune finished it; its state is saved and recorded for `--resume`."""

    def __init__(self, name: str, storage: str, tracking_uri: str):
        super().__init__(name)
        self.name, self.storage, self.tracking_uri = name, storage, tracking_uri


def _close_after_stop(uri: str, parent: str | None, storage: str, name: str, stop: BaseException) -> None:
    """The driver is going down (a signal, an error): leave no run RUNNING (--resume reopens them) and
    record the digests of the state Tune saved, so a resume can trust it. A stop by a signal becomes
    `SearchStopped`, which says how to resume."""
    if parent is None:
        return
    try:
        record_state(uri, parent, storage, name)
        runs.close_children(uri, parent, "KILLED")
        if MlflowClient(uri).get_run(parent).info.status == "RUNNING":
            MlflowClient(uri).set_terminated(parent, "KILLED")
    except Exception:  # the tracking server may be what failed; the original error matters more
        pass
    if isinstance(stop, KeyboardInterrupt) and not isinstance(stop, SearchStopped):
        raise SearchStopped(name, storage, uri) from stop


def _rows(results, search: ResolvedSearch, children: dict, client: MlflowClient) -> list[dict[str, Any]]:
    """One row per trial: Tune's view (status, epochs, best metric) and the child run's test metrics. The best
    metric is taken over the child run's whole history too: after a trial is restored from a checkpoint,
    Tune's result files hold only the epochs since the restore."""
    spec = search.spec
    assert spec.metric is not None and spec.mode is not None, "set by load_search"
    shown = get_task(search.task).shown_test_metrics
    rows = []
    for result in results:
        frame = result.metrics_dataframe
        # the trial's own results first: after a PBT exploit its last result is the clone's, id included
        trial_id = (frame["trial_id"].iloc[-1] if frame is not None and "trial_id" in frame else None) or (
            (result.metrics or {}).get("trial_id"))
        run = children.get(trial_id)
        values = [float(v) for v in frame[spec.metric].dropna()] if frame is not None and spec.metric in frame else []
        if run is not None:
            values += [m.value for m in client.get_metric_history(run.info.run_id, spec.metric)]
        values = [v for v in values if math.isfinite(v)]
        best = (max(values) if spec.mode == "max" else min(values)) if values else math.nan
        status = "error" if result.error else leaderboard.STATUS.get(run.info.status if run else "", "not started")
        epochs = int(frame[TIME_ATTR].max()) if frame is not None and TIME_ATTR in frame else 0
        used = applicable_params(result.config or {})  # a hyper-parameter its architecture lacks shows as empty
        row = {"trial_id": trial_id, "run_id": run.info.run_id if run else None, "status": status, "epochs": epochs,
               spec.metric: best, **{d.key: used.get(d.key) for d in search.dimensions}}
        if run is not None:
            row.update({k: v for k, v in run.data.metrics.items() if k in shown})
        rows.append(row)
    return leaderboard.rank_rows(rows, spec.metric, spec.mode)


def _refused_trials(results) -> list[str]:
    """What each trial that met a checkpoint that is not stride's weights said about it."""
    errors = [getattr(r.error, "cause", r.error) for r in results]  # Ray wraps a trial's exception
    return [str(error) for error in errors if isinstance(error, CheckpointRefused)]


def _interrupted(experiment_path: str) -> bool:
    """Whether Ctrl-C (or SIGUSR1) cut the search short. Tune stops every trial on the way out, so the
    live results all read TERMINATED; the state Tune saved just before that still tells. `experiment_path`
    is STORAGE/NAME as the user named it: Tune's own `experiment_path` drops a bucket's scheme (`s3://`),
    which its `ExperimentAnalysis` then takes for a local path."""
    from ray.tune import ExperimentAnalysis

    return any(t.status not in ("TERMINATED", "ERROR") for t in ExperimentAnalysis(experiment_path).trials)


def _finish(results, search: ResolvedSearch, uri: str, parent: str, name: str, storage: str,
            started: float) -> SearchResult:
    """Leaderboard, plot and best-trial tags on the parent run; close it."""
    spec = search.spec
    assert spec.metric is not None, "set by load_search"
    interrupted = _interrupted(f"{storage}/{name}")
    record_state(uri, parent, storage, name)  # the state Tune saved is final now
    client = MlflowClient(uri)
    rows = _rows(results, search, runs.child_runs(uri, parent), client)
    header = leaderboard.columns(rows, search.dimensions, spec.metric)
    best = next((r for r in rows if math.isfinite(r[spec.metric])), None)
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(parent, str(leaderboard.write_csv(rows, header, Path(tmp) / LEADERBOARD_ARTIFACT)))
        if any(math.isfinite(r[spec.metric]) for r in rows):
            png = leaderboard.plot_metric_vs_params(rows, search.dimensions, spec.metric,
                                                    Path(tmp) / f"{safe_filename(spec.metric)}_vs_params.png")
            client.log_artifact(parent, str(png), PLOTS_FOLDER)
    if best is not None:
        client.log_metric(parent, best_metric(spec.metric), best[spec.metric])
        client.set_tag(parent, BEST_TRIAL_ID_TAG, best["trial_id"])
        if best["run_id"]:
            client.set_tag(parent, BEST_RUN_ID_TAG, best["run_id"])
    runs.close_children(uri, parent, "KILLED")
    refused = _refused_trials(results)
    client.set_terminated(parent, "FAILED" if refused else "KILLED" if interrupted else "FINISHED")
    if refused:
        raise StrideError(f"search {name}: {len(refused)} trial(s) refused a checkpoint; {refused[0]}")
    return SearchResult(name, f"{storage}/{name}", parent, uri, spec.metric,
                        best["trial_id"] if best else None, best["run_id"] if best else None,
                        best[spec.metric] if best else None, rows, header, time.perf_counter() - started,
                        interrupted, client.get_run(parent).info.experiment_id)
