"""The MLflow Model Registry side of stride: promote, evaluate, predict, roll back.

`promote_best` picks a run, re-evaluates it, gates it against the champion and registers
it with its lineage; `predict_files` serves predictions from any model URI; `load_model` loads one,
verified against the digests recorded when it was logged.
"""

from stride.registry.prediction import predict_files
from stride.registry.promotion import PromotionResult, RollbackResult, promote_best, rollback
from stride.registry.references import load_model
from stride.registry.samples import write_sample_images

__all__ = ["PromotionResult", "RollbackResult", "load_model", "predict_files", "promote_best", "rollback",
           "write_sample_images"]
