"""Serving: what a registered model's task does around the exported network (export, evaluation, reading users'
files, formatting predictions); importing this package registers every module's serving code."""

from stride.plugins import import_submodules

import_submodules(__name__)
