"""Promotion and rollback: the only code that moves the `champion` and `previous` aliases.

A challenger is re-evaluated on its dataset's test split, the champion on that same split,
and the challenger is registered only if it beats the champion on its task's quality
metric (`Task.quality`: test accuracy for classification) by at least `min_delta` (ties
never replace a champion). The decision and all alias moves happen
under the registry lock, so concurrent promotions serialise; a run that already is the
champion is reported and nothing is written (idempotent).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from stride.datamodules.manifest import MANIFEST_NAME
from stride.errors import StrideError
from stride.registry.candidates import Candidate, run_as_candidate, runs_of_experiment, runs_of_search, select_best
from stride.registry.card import model_card
from stride.registry.client import connect, is_missing, mlflow_errors
from stride.registry.evaluation import check_dataset_identity, evaluate_network
from stride.registry.lock import LOCK_SUFFIX, registry_lock
from stride.registry.references import ModelReference, describe_model, load_network
from stride.serving import Evaluation, get_serving
from stride.tasks import Task, get_task
from stride.tracking.contract import (
    CHAMPION_ALIAS,
    CLASS_NAMES_TAG,
    CONFIG_ARTIFACT,
    CONFIG_SHA256_TAG,
    DATASET_PATH_TAG,
    DATASET_SHA256_TAG,
    EVALUATION_PREFIX,
    FORCED_TAG,
    GATE_TAG,
    LINEAGE_TAGS,
    MODEL_URI_TAG,
    PARENT_TAG,
    REPLACED_EVALUATION_PREFIX,
    REPLACED_RUN_ID_TAG,
    REPLACED_VERSION_TAG,
    RESTORED_OVER_TAG,
    RUN_ID_TAG,
    SEARCH_ID_TAG,
    SELECTION_TAG,
    TASK_TAG,
    export_lock_name,
    previous_alias,
)
from stride.tracking.deferred import export_deferred_model

log = logging.getLogger(__name__)


@dataclass
class Champion:
    version: ModelVersion
    evaluation: Evaluation | None = None

    @property
    def run_id(self) -> str | None:
        return self.version.tags.get(RUN_ID_TAG) or self.version.run_id


@dataclass
class PromotionResult:
    model_name: str
    alias: str
    outcome: str  # promoted | refused | already-champion
    candidate: Candidate
    evaluation: Evaluation | None
    champion: Champion | None
    forced: bool = False
    version: str | None = None
    reason: str = ""

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}@{self.alias}"

    def summary(self) -> str:
        c = self.candidate
        lines = [f"candidate : run {c.run_id} ({c.how} among {c.considered} run(s): {c.metric_key}={c.value:.4f})"]
        if self.evaluation:
            lines.append(f"            re-evaluated: {self.evaluation.summary()}")
        if self.champion:
            v = self.champion.version
            lines.append(f"champion  : version {v.version} (run {self.champion.run_id})")
            if self.champion.evaluation:
                lines.append(f"            re-evaluated: {self.champion.evaluation.summary()}")
        else:
            lines.append(f"champion  : none yet under @{self.alias}")
        lines.append(f"decision  : {self.outcome}{' (FORCED)' if self.forced else ''}: {self.reason}")
        if self.promoted:
            lines.append(f"registered: {self.model_name} version {self.version} -> @{self.alias}"
                         + (f"; version {self.champion.version.version} -> @{previous_alias(self.alias)}"
                            if self.champion else ""))
            lines.append(f"load with : stride.registry.load_model(\"{self.model_uri}\")  |  "
                         f"stride predict --model {self.model_uri} FILE")
        return "\n".join(lines)


def current_version(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as err:
        if is_missing(err) or "not found" in str(err) or "alias" in str(err).lower():
            return None
        raise


def config_sha256(run_id: str) -> str:
    """Hash of the resolved config the run logged: identifies exactly how it was trained."""
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{CONFIG_ARTIFACT}")
    except (MlflowException, OSError) as err:
        raise StrideError(f"run {run_id} has no {CONFIG_ARTIFACT} artifact ({err}); only stride training runs can be "
                          "promoted") from None
    return hashlib.sha256(text.encode()).hexdigest()


def evaluate_reference(ref: ModelReference, data, split: str = "test") -> Evaluation:
    return evaluate_network(get_serving(ref.task), load_network(ref), data, split, model_uri=ref.uri,
                            input_shape=ref.input_shape)


def gate(task: Task, candidate: Evaluation, champion: Evaluation | None, min_delta: float) -> tuple[bool, str]:
    """Whether the candidate beats the champion on the task's quality metric by at least `min_delta`."""
    key = f"{candidate.split}_{task.quality}"
    if champion is None:
        return True, f"first {key} on record ({candidate.value(task.quality):.4f})"
    sign = 1 if task.quality_mode == "max" else -1
    gain = sign * (candidate.value(task.quality) - champion.value(task.quality))
    passed = gain > 0 and gain >= min_delta
    verdict = ">=" if passed else "<" if gain < min_delta else "tie, not >"
    better = "higher" if task.quality_mode == "max" else "lower"
    return passed, (f"{key} {candidate.value(task.quality):.4f} vs champion {champion.value(task.quality):.4f} on the "
                    f"same {candidate.samples} samples: {better} by {gain:+.4f} {verdict} min_delta {min_delta}")


def lineage_tags(task: Task, candidate: Candidate, evaluation: Evaluation, config_hash: str,
                 champion: Champion | None, gate_text: str, forced: bool) -> dict[str, str]:
    run_tags = candidate.run.data.tags
    tags = {RUN_ID_TAG: candidate.run_id, MODEL_URI_TAG: candidate.model_uri,
            CONFIG_SHA256_TAG: config_hash, DATASET_SHA256_TAG: evaluation.dataset_sha256,
            DATASET_PATH_TAG: evaluation.dataset_path,
            SELECTION_TAG: f"{candidate.metric_key}={candidate.value:.6g}",
            GATE_TAG: gate_text, FORCED_TAG: str(forced).lower(),
            **{f"{EVALUATION_PREFIX}{k}": f"{v:.6g}" for k, v in evaluation.metrics.items()}}
    for key in LINEAGE_TAGS:
        if key in run_tags:
            tags[key] = run_tags[key]
    if search_id := run_tags.get(SEARCH_ID_TAG) or run_tags.get(PARENT_TAG):
        tags[SEARCH_ID_TAG] = search_id
    if champion is not None:
        tags[REPLACED_VERSION_TAG] = str(champion.version.version)
        tags[REPLACED_RUN_ID_TAG] = champion.run_id or ""
        if champion.evaluation is not None:
            key = f"{champion.evaluation.split}_{task.quality}"
            tags[f"{REPLACED_EVALUATION_PREFIX}{key}"] = f"{champion.evaluation.value(task.quality):.6g}"
    names = json.dumps(evaluation.details.get("class_names", []))
    if len(names) <= 5000:  # registry tag values are bounded; predict falls back to the manifest
        tags[CLASS_NAMES_TAG] = names
    return tags


def _candidate(client: MlflowClient, experiment: str | None, search_id: str | None, run_id: str | None,
               metric: str | None, mode: str | None) -> Candidate:
    """The run to promote; by default the best on its task's validation quality (the task says which)."""
    if sum(x is not None for x in (experiment, search_id, run_id)) != 1:
        raise StrideError("give exactly one of --experiment NAME, --search RUN_ID or --run RUN_ID")
    if run_id is not None:
        return run_as_candidate(client, run_id, metric)
    # exactly one of the three is given, so without an experiment, the search
    runs, where = runs_of_experiment(client, experiment) if experiment else runs_of_search(client, cast(str, search_id))
    if metric is None:
        tasks = sorted({tag for r in runs if (tag := r.data.tags.get(TASK_TAG))})
        if len(tasks) > 1:
            raise StrideError(f"{where} holds runs of several tasks ({', '.join(tasks)}); give --metric and --mode")
        task = get_task(tasks[0] if tasks else "classification")
        metric, mode = f"val_{task.quality}", mode or task.quality_mode
    return select_best(runs, metric, mode or "max", where)


def _dataset_path(candidate: Candidate, data: str | Path | None) -> str | Path:
    """The dataset to evaluate on: a folder, or a bucket's prefix (s3://...), whose manifest is read next."""
    path = data or candidate.run.data.tags.get(DATASET_PATH_TAG)
    if not path:
        raise StrideError(f"run {candidate.run_id} has no {DATASET_PATH_TAG} tag; pass --data PATH of its dataset")
    if "://" in str(path):  # reading its manifest (check_dataset_identity) says what is missing, naming the object
        return str(path)
    if not (Path(path) / MANIFEST_NAME).is_file():
        hint = "" if data else f"run {candidate.run_id} was trained on it elsewhere? pass --data PATH of a copy; "
        raise StrideError(f"no dataset at {path} ({hint}{MANIFEST_NAME} not found)")
    return Path(path)


def promote_best(tracking_uri: str | None = None, *, model_name: str, experiment: str | None = None,
                 search_id: str | None = None, run_id: str | None = None, metric: str | None = None,
                 mode: str | None = None, min_delta: float = 0.0, force: bool = False, alias: str = CHAMPION_ALIAS,
                 data: str | Path | None = None, lock_timeout_s: float = 120.0) -> PromotionResult:
    """Pick, re-evaluate, gate against the champion and, if it wins (or `force`), register and alias it."""
    if not model_name or model_name.endswith(LOCK_SUFFIX):
        raise StrideError(f"--model-name {model_name!r} is not valid (must not be empty or end in {LOCK_SUFFIX})")
    client = connect(tracking_uri)
    with mlflow_errors("selecting the run to promote"):
        candidate = _candidate(client, experiment, search_id, run_id, metric, mode)
    with mlflow_errors(f"reading registered model {model_name!r}"):
        champion_version = current_version(client, model_name, alias)
    if champion_version is not None and Champion(champion_version).run_id == candidate.run_id:
        return _already(model_name, alias, candidate, Champion(champion_version))

    dataset = _dataset_path(candidate, data)
    check_dataset_identity(dataset, candidate.run.data.tags.get(DATASET_SHA256_TAG), candidate.run_id)
    config_hash = config_sha256(candidate.run_id)
    if MODEL_URI_TAG not in candidate.run.data.tags:  # a search trial that logged its weights only
        _export_once(client, candidate, lock_timeout_s)
    candidate_ref = describe_model(client, candidate.model_uri)
    task = get_task(candidate_ref.task)
    test_data = task.evaluation_data(dataset, candidate_ref.input_shape)
    evaluation = evaluate_reference(candidate_ref, test_data)

    with registry_lock(client, model_name, timeout_s=lock_timeout_s):
        champion_version = current_version(client, model_name, alias)  # may have moved while we evaluated
        champion = Champion(champion_version) if champion_version is not None else None
        if champion is not None and champion.run_id == candidate.run_id:
            return _already(model_name, alias, candidate, champion)
        if champion is not None:
            champion.evaluation = _evaluate_champion(client, champion, test_data, force)
        passed, gate_text = gate(task, evaluation, champion.evaluation if champion else None, min_delta)
        result = PromotionResult(model_name, alias, "refused", candidate, evaluation, champion, reason=gate_text)
        if not passed and not force:
            return result
        if not passed:
            gate_text = f"forced with --force despite the gate ({gate_text})"
        result.forced, result.reason, result.outcome = not passed, gate_text, "promoted"
        tags = lineage_tags(task, candidate, evaluation, config_hash, champion, gate_text, result.forced)
        card = model_card(model_name, alias, candidate.run, evaluation, config_hash, gate_text)
        result.version = _register(client, model_name, alias, candidate, tags, card, champion)
    return result


def _export_once(client: MlflowClient, candidate: Candidate, lock_timeout_s: float) -> None:
    """Export a weights-only run's model into it; under a lock of its own, so that concurrent promotions of
    the run (into any model name) export it once and the later ones find that model."""
    with mlflow_errors(f"exporting the model of run {candidate.run_id} from its weights"):
        with registry_lock(client, export_lock_name(candidate.run_id), timeout_s=lock_timeout_s, purpose="export"):
            export_deferred_model(client.tracking_uri, candidate.run_id)  # the model already there, if any
        candidate.run = client.get_run(candidate.run_id)


def _already(model_name: str, alias: str, candidate: Candidate, champion: Champion) -> PromotionResult:
    reason = f"run {candidate.run_id} already is @{alias} (version {champion.version.version}); nothing changed"
    return PromotionResult(model_name, alias, "already-champion", candidate, None, champion, reason=reason,
                           version=str(champion.version.version))


def _evaluate_champion(client: MlflowClient, champion: Champion, data, force: bool) -> Evaluation | None:
    v = champion.version
    try:  # a champion logged before stride recorded digests is refused here too
        return evaluate_reference(describe_model(client, f"models:/{v.name}/{v.version}"), data)
    except StrideError as err:
        if force:
            log.warning("champion version %s cannot be evaluated on %s (%s); --force replaces it anyway",
                        v.version, data.root, err)
            return None
        raise StrideError(f"the champion (version {v.version}) cannot be compared on the candidate's test split: "
                          f"{err}; pass --force to replace it anyway") from None


def _register(client: MlflowClient, model_name: str, alias: str, candidate: Candidate, tags: dict[str, str],
              card: str, champion: Champion | None) -> str:
    """New version first, then the aliases: a crash in between leaves the champion untouched."""
    with mlflow_errors(f"registering run {candidate.run_id} as {model_name!r}"):
        try:
            client.create_registered_model(model_name, description="Promoted by `stride promote`; each version's "
                                           "description is its model card.")
        except MlflowException as err:
            if "already exists" not in str(err).lower():
                raise
        uri = candidate.model_uri
        model_id = uri.removeprefix("models:/") if uri.startswith("models:/m-") else None
        version = client.create_model_version(model_name, source=candidate.model_uri, run_id=candidate.run_id,
                                              tags=tags, description=card, model_id=model_id)
        if champion is not None:
            client.set_registered_model_alias(model_name, previous_alias(alias), champion.version.version)
        client.set_registered_model_alias(model_name, alias, version.version)
    return str(version.version)


@dataclass
class RollbackResult:
    model_name: str
    alias: str
    restored: str
    demoted: str

    def summary(self) -> str:
        return (f"{self.model_name}: version {self.restored} -> @{self.alias}, version {self.demoted} -> "
                f"@{previous_alias(self.alias)}")


def rollback(tracking_uri: str | None, model_name: str, alias: str = CHAMPION_ALIAS,
             lock_timeout_s: float = 120.0) -> RollbackResult:
    """Swap @champion and @previous (running it twice undoes it)."""
    client = connect(tracking_uri)
    back = previous_alias(alias)
    with mlflow_errors(f"reading registered model {model_name!r}"):
        client.get_registered_model(model_name)
    with registry_lock(client, model_name, timeout_s=lock_timeout_s, purpose="rollback"):
        champion, previous = current_version(client, model_name, alias), current_version(client, model_name, back)
        if previous is None:
            raise StrideError(f"model {model_name!r} has no @{back} version to roll back to")
        if champion is None:
            raise StrideError(f"model {model_name!r} has no @{alias} version")
        with mlflow_errors(f"rolling back {model_name!r}"):
            client.set_registered_model_alias(model_name, alias, previous.version)
            client.set_registered_model_alias(model_name, back, champion.version)
            client.set_model_version_tag(model_name, previous.version, RESTORED_OVER_TAG, str(champion.version))
    return RollbackResult(model_name, alias, str(previous.version), str(champion.version))
