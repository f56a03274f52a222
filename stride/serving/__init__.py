"""Serving: what a registered model's task does around the exported network (export, evaluation, reading users'
files, formatting predictions); importing this package registers every module's serving code."""

from stride.plugins import import_submodules
from stride.serving.base import (
                                 DEFAULT_MAX_PIXELS,
                                 Evaluation,
                                 ExportedModel,
                                 Serving,
                                 TensorSpec,
                                 get_serving,
                                 register_serving,
)

import_submodules(__name__)

__all__ = ["DEFAULT_MAX_PIXELS", "Evaluation", "ExportedModel", "Serving", "TensorSpec", "get_serving",
           "register_serving"]
