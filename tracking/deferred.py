"""A run's model exported after the run ended, from the weights it logged (`tracking.log_model: deferred`).

Search trials log only `weights/module.pt`: most trials are never promoted, and exporting is most of a
short trial's logging time. The run that is promoted is exported here, from that weights-only checkpoint
alone, into the same run, as the same pt2 model `tracking.log_model: true` would have logged at its end.
"""

from __future__ import annotations

import tempfile

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from stride.errors import StrideError
from stride.serving import get_serving
from stride.tasks import DataFacts
from stride.tracking.contract import (
    DEFERRED_MODEL_TAG,
    EXPORTED_LATER_TAG,
    MODEL_URI_TAG,
    MODULE_ARTIFACT,
    MODULE_SHA256_TAG,
)
from stride.tracking.digests import download_verified
from stride.tracking.models import log_exported
from stride.training.checkpoints import load_module


def has_model(tags: dict[str, str]) -> bool:
    """Whether a run has a logged model, or the weights to export one from."""
    return MODEL_URI_TAG in tags or DEFERRED_MODEL_TAG in tags


def export_deferred_model(tracking_uri: str, run_id: str) -> str:
    """The run's model URI, exporting it first if the run logged weights only."""
    client = MlflowClient(tracking_uri)
    tags = client.get_run(run_id).data.tags
    if MODEL_URI_TAG in tags:
        return tags[MODEL_URI_TAG]
    if DEFERRED_MODEL_TAG not in tags:
        raise StrideError(f"run {run_id} has no logged model nor weights to export one from (tags {MODEL_URI_TAG}, "
                          f"{DEFERRED_MODEL_TAG}); train with tracking.log_model=true")
    with tempfile.TemporaryDirectory() as tmp:
        # the exported model's digests will vouch for it: its weights must be the ones the run logged
        path = download_verified(tracking_uri, run_id, MODULE_ARTIFACT, tags.get(MODULE_SHA256_TAG), tmp,
                                 f"exporting run {run_id}'s model")
        config, module = load_module(path)  # weights_only: nothing in the artifact store is unpickled
    facts = DataFacts.from_dict(module.hparams["stride"]["data"])
    try:
        uri = log_exported(get_serving(config.task).export(module, facts), tracking_uri, run_id)
    except (StrideError, MlflowException):
        raise
    except Exception as err:  # torch.export refusing the network, a full disk, ...
        raise StrideError(f"run {run_id}: exporting its model from {MODULE_ARTIFACT} failed: "
                          f"{type(err).__name__}: {err}") from err
    client.set_tag(run_id, MODEL_URI_TAG, uri)
    client.set_tag(run_id, EXPORTED_LATER_TAG, MODULE_ARTIFACT)
    return uri
