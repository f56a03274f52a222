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

EXPERIMENT = "evaluations"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="evaluate a logged or registered model on a dataset split")
    parser.add_argument("--model", required=True, help="models:/NAME@champion, models:/NAME/VERSION, "
                                                        "models:/m-<id> or runs:/RUN_ID/model")
    parser.add_argument("--data", required=True, help="dataset folder (holds manifest.json)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--experiment", default=EXPERIMENT, help=f"where the evaluation run goes ({EXPERIMENT})")
    add_tracking_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stride.registry.client import connect
    from stride.registry.evaluation import evaluate_network, open_dataset
    from stride.registry.references import describe_model, load_network

    client = connect(args.tracking_uri)
    ref = describe_model(client, args.model)
    data = open_dataset(args.data)
    data.manifest.split(args.split)
    result = evaluate_network(load_network(ref), data, args.split, model_uri=args.model, input_shape=ref.input_shape)
    run_id = log_evaluation(ref, result, args.experiment, args.tracking_uri)
    print(f"model    : {args.model}" + (f" (version {ref.version})" if ref.version else ""))
    print(f"data     : {result.dataset_path} [{args.split}]")
    print(f"accuracy : {result.accuracy:.4f}")
    print(f"loss     : {result.loss:.4f}")
    print(f"samples  : {result.samples}")
    print(f"logged   : run {run_id} in experiment {args.experiment!r} (plots/confusion_matrix_{args.split}.png)")
    return 0


def log_evaluation(ref, result, experiment: str, tracking_uri: str | None) -> str:
    import mlflow

    from stride.tracking.plots import plot_confusion_matrix
    from stride.tracking.store import resolve_tracking_uri, use_store

    use_store(resolve_tracking_uri(tracking_uri), experiment)
    tags = {"stride.evaluated_model": ref.uri, "dataset.path": result.dataset_path,
            "dataset.manifest_sha256": result.dataset_sha256, "stride.split": result.split}
    if ref.run_id:
        tags["stride.evaluated_run_id"] = ref.run_id
    if ref.version:
        tags.update({"stride.registered_model": ref.registered_name, "stride.model_version": ref.version})
    with mlflow.start_run(run_name=f"evaluate {ref.uri}", tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_metrics(result.metrics())
        png = plot_confusion_matrix(result.confusion_matrix, result.class_names,
                                    Path(tmp) / f"confusion_matrix_{result.split}.png",
                                    title=f"{ref.uri} {result.split}")
        mlflow.log_artifact(str(png), "plots")
    return run.info.run_id
