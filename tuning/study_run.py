"""Running a study: its rows as one search, then the report (measured beside published) on the search's
MLflow parent run as markdown, a figure and the study itself, so `stride study report` can redo it later."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from stride.errors import StrideError
from stride.hardware import this_machine
from stride.names import safe_filename
from stride.tracking.contract import (
    NUM_PARAMS_PARAM,
    PLOTS_FOLDER,
    SEARCH_SPEC_TAG,
    STUDY_ARTIFACT,
    STUDY_HARDWARE_TAG,
    STUDY_REPORT_ARTIFACT,
    STUDY_ROW_TAG,
    STUDY_TAG,
    WALL_TIME_METRIC,
)
from stride.tracking.store import check_reachable, resolve_tracking_uri
from stride.tuning.cluster import TrialResources
from stride.tuning.search import DEFAULT_STORAGE, SearchResult, read_record, resume_search, run_search, storage_root
from stride.tuning.spec import ROW_KEY
from stride.tuning.study import StudyPlan, StudyReport, StudySpec, report_rows

EPOCH_METRIC = "val_loss"  # every task logs it once per validation epoch (lightning_modules.base)
PREPARED_DATA = "study-data"  # built-in datasets a scale prepares, under the storage folder


def prepare_built_in(dataset: str | None, storage: str) -> str | None:
    """The path of a built-in dataset a scale trains on, prepared once under the storage folder."""
    if dataset is None:
        return None
    if "://" in storage:
        raise StrideError(f"a study scale that prepares {dataset} keeps it beside --storage, which must be a "
                          "local folder; prepare the data yourself and pass --set data.path=...")
    from stride.datamodules.manifest import MANIFEST_NAME
    from stride.datamodules.sources.digits import prepare_digits
    from stride.datamodules.sources.faces import prepare_faces
    from stride.datamodules.sources.patches import prepare_patches
    from stride.datamodules.sources.shapes_captions import prepare_shapes_captions

    prepare: dict[str, Callable[[Path], Any]] = {"digits": prepare_digits, "patches": prepare_patches,
                                                 "faces": prepare_faces, "shapes-captions": prepare_shapes_captions}
    out = Path(storage_root(storage)) / PREPARED_DATA / dataset
    if not (out / MANIFEST_NAME).is_file():
        prepare[dataset](out)
    return str(out.absolute())


def run_study(plan: StudyPlan, *, tracking_uri: str | None = None, storage: str = DEFAULT_STORAGE,
              name: str | None = None, address: str | None = None,
              resources: TrialResources = TrialResources(), verbose: bool = False) -> tuple[SearchResult, StudyReport]:
    result = run_search(plan.search, tracking_uri=tracking_uri, storage=storage, name=name, address=address,
                        resources=resources, verbose=verbose)
    return result, publish_report(result.tracking_uri, result.parent_run_id, plan.study, plan.scale, result)


def resume_study(name: str, study: StudySpec, scale: str, *, tracking_uri: str | None = None,
                 storage: str = DEFAULT_STORAGE, address: str | None = None,
                 verbose: bool = False, trust_storage: bool = False) -> tuple[SearchResult, StudyReport]:
    """Continue a study run whose driver stopped: finished rows stay, the rest go on from their checkpoints
    (the search's integrity checks apply); `study` and `scale` come from the user, as they started it."""
    record = read_record(storage_root(storage), name)
    recorded = str(((record or {}).get("search") or {}).get("source", ""))
    if record is not None and not recorded.endswith(f"({scale})"):
        raise StrideError(f"study run {name} was started as {recorded!r}; resume it with the same --scale")
    result = resume_search(name, storage=storage, address=address, verbose=verbose, tracking_uri=tracking_uri,
                           trust_storage=trust_storage)
    searched = MlflowClient(result.tracking_uri).get_run(result.parent_run_id).data.tags.get(SEARCH_SPEC_TAG)
    if searched not in (None, study.name):
        raise StrideError(f"study run {name} ran study {searched!r}, not {study.name!r}")
    return result, publish_report(result.tracking_uri, result.parent_run_id, study, scale, result)


def report_study(parent_run_id: str, tracking_uri: str | None = None) -> StudyReport:
    """The report of a study's parent run, made again from the tracking store (and logged again)."""
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    study, scale = read_study(uri, parent_run_id)
    return publish_report(uri, parent_run_id, study, scale, None)


def read_study(uri: str, parent_run_id: str) -> tuple[StudySpec, str]:
    client = MlflowClient(uri)
    try:
        run = client.get_run(parent_run_id)
    except Exception:  # MlflowException for an unknown id, a bad request for a malformed one
        raise StrideError(f"no run {parent_run_id!r} in {uri}") from None
    if STUDY_TAG not in run.data.tags:
        raise StrideError(f"run {parent_run_id} is not a study's parent run (no {STUDY_TAG} tag)")
    with tempfile.TemporaryDirectory() as tmp:
        data = json.loads(Path(client.download_artifacts(parent_run_id, STUDY_ARTIFACT, tmp)).read_text())
    return StudySpec.model_validate(data["study"]), str(data["scale"])


def trial_figures(uri: str, parent_run_id: str, metric: str) -> list[dict[str, Any]]:
    """Each child run's row, metric, parameter count, epochs and wall time, from the tracking store."""
    from stride.tuning.runs import child_runs

    client = MlflowClient(uri)
    trials = []
    for run in child_runs(uri, parent_run_id).values():
        row = run.data.tags.get(STUDY_ROW_TAG)
        if row is None:
            continue
        metrics, params = run.data.metrics, run.data.params
        trials.append({ROW_KEY: row, "metric": metrics.get(metric),
                       "parameters": int(params[NUM_PARAMS_PARAM]) if NUM_PARAMS_PARAM in params else None,
                       # a restarted trial logs the epochs since its checkpoint again, at the same steps
                       "epochs": len({m.step for m in client.get_metric_history(run.info.run_id, EPOCH_METRIC)}),
                       "seconds": metrics.get(WALL_TIME_METRIC), "hardware": run.data.tags.get(STUDY_HARDWARE_TAG)})
    return trials


def publish_report(uri: str, parent_run_id: str, study: StudySpec, scale: str,
                   result: SearchResult | None) -> StudyReport:
    client = MlflowClient(uri)
    trials = trial_figures(uri, parent_run_id, study.metric)
    hardware = "; ".join(sorted({t["hardware"] for t in trials if t.get("hardware")})) or this_machine()
    report = StudyReport(study, scale, hardware, report_rows(study, trials))
    client.set_tag(parent_run_id, STUDY_TAG, study.name)
    client.set_tag(parent_run_id, STUDY_HARDWARE_TAG, hardware)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for artifact, text in ((STUDY_ARTIFACT, json.dumps({"study": study.model_dump(mode="json"), "scale": scale})),
                               (STUDY_REPORT_ARTIFACT, report.markdown())):
            file = folder / Path(artifact).name
            file.write_text(text)
            client.log_artifact(parent_run_id, str(file), str(Path(artifact).parent))
        client.log_artifact(parent_run_id, str(plot_study(report, folder / f"{safe_filename(study.name)}.png")),
                            PLOTS_FOLDER)
    return report


def plot_study(report: StudyReport, path: Path) -> Path:
    """Measured (mean ± std) beside published, one pair of bars per row, rows grouped by the study's axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study = report.study
    rows = sorted(report.rows, key=lambda r: tuple(str(r.axes.get(axis, "")) for axis in study.axes))
    labels = [" / ".join([r.name, *(str(r.axes[a]) for a in study.axes if a in r.axes)]) for r in rows]
    positions = range(len(rows))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(rows) + 2), 4.5))
    published = [r.published if r.published is not None else math.nan for r in rows]
    measured = [r.mean if r.mean is not None else math.nan for r in rows]
    errors = [r.std or 0.0 for r in rows]
    axes.bar([p - 0.2 for p in positions], published, width=0.4, label="published", color="#999999")
    axes.bar([p + 0.2 for p in positions], measured, width=0.4, yerr=errors, capsize=3,
             label=f"measured ({report.scale})", color="#1f77b4")
    axes.set_xticks(list(positions), labels, rotation=30, ha="right")
    axes.set_ylabel({"value": study.metric, "error_percent": "test error %",
                     "accuracy_percent": "accuracy %"}[study.published_as])
    axes.set_title(f"{study.title}\n{study.source}; {report.hardware}", fontsize=9)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
