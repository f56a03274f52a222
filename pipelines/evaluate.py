"""`stride evaluate`: a model's metrics on one split of a dataset, with a confusion matrix in MLflow.

Each evaluation is recorded as a new run in the `evaluations` experiment (the training run
stays as it finished), tagged with the model URI, the registry version and the dataset's
manifest sha256.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from stride.pipelines.arguments import add_tracking_argument
from stride.tracking.contract import (
    DATASET_PATH_TAG,
    DATASET_SHA256_TAG,
    EVALUATED_MODEL_TAG,
    EVALUATED_RUN_ID_TAG,
    EVALUATIONS_EXPERIMENT,
    MODEL_VERSION_TAG,
    PLOTS_FOLDER,
    REGISTERED_MODEL_TAG,
    SPLIT_TAG,
    TASK_TAG,
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="evaluate a logged or registered model on a dataset split")
    parser.add_argument("--model", required=True, help="models:/NAME@champion, models:/NAME/VERSION, "
                                                        "models:/m-<id> or runs:/RUN_ID/model")
    parser.add_argument("--data", required=True, help="dataset folder (holds manifest.json)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--predictions-dir", help="also write per-image prediction files there (detection: the "
                        "`<event>/<name>.txt` files the official WIDER FACE evaluation tools read)")
    parser.add_argument("--experiment", default=EVALUATIONS_EXPERIMENT,
                        help=f"where the evaluation run goes ({EVALUATIONS_EXPERIMENT})")
    add_tracking_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stride.errors import StrideError
    from stride.registry.client import connect
    from stride.registry.evaluation import evaluate_network
    from stride.registry.references import describe_model, load_network
    from stride.serving import Serving, get_serving
    from stride.tasks import get_task

    client = connect(args.tracking_uri)
    ref = describe_model(client, args.model)
    serving = get_serving(ref.task)
    if args.predictions_dir and type(serving).write_predictions is Serving.write_predictions:
        raise StrideError(f"--predictions-dir: task {ref.task!r} of {args.model} writes no prediction files")
    data = get_task(ref.task).evaluation_data(args.data, ref.input_shape)
    result = evaluate_network(serving, load_network(ref), data, args.split, model_uri=args.model,
                              input_shape=ref.input_shape)
    written = serving.write_predictions(result, Path(args.predictions_dir)) if args.predictions_dir else []
    run_id, link = log_evaluation(serving, ref, result, args.experiment, args.tracking_uri)
    print(f"model    : {args.model}" + (f" (version {ref.version})" if ref.version else ""))
    print(f"data     : {result.dataset_path} [{args.split}]")
    for key, value in result.metrics.items():
        if not key.endswith("_samples"):
            print(f"{key:<9}: {value:.4f}")
    print(f"samples  : {result.samples}")
    if written:
        print(f"files    : {len(written)} prediction files under {args.predictions_dir}")
    print(f"logged   : run {run_id} in experiment {args.experiment!r} ({PLOTS_FOLDER}/)")
    print(f"MLflow   : {link}")
    return 0


def log_evaluation(serving, ref, result, experiment: str, tracking_uri: str | None) -> tuple[str, str]:
    from mlflow.tracking import MlflowClient

    from stride.tracking.store import ensure_experiment, resolve_tracking_uri, ui_hint

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    tags = {EVALUATED_MODEL_TAG: ref.uri, DATASET_PATH_TAG: result.dataset_path,
            DATASET_SHA256_TAG: result.dataset_sha256, SPLIT_TAG: result.split, TASK_TAG: ref.task}
    if ref.run_id:
        tags[EVALUATED_RUN_ID_TAG] = ref.run_id
    if ref.version:
        tags.update({REGISTERED_MODEL_TAG: ref.registered_name, MODEL_VERSION_TAG: ref.version})
    experiment_id = ensure_experiment(uri, experiment)
    run_id = client.create_run(experiment_id, run_name=f"evaluate {ref.uri}", tags=tags).info.run_id
    for key, value in result.metrics.items():
        client.log_metric(run_id, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        for png in serving.evaluation_figures(result, Path(tmp), ref.uri):
            client.log_artifact(run_id, str(png), PLOTS_FOLDER)
    client.set_terminated(run_id)
    return run_id, ui_hint(uri, experiment_id, run_id)
