"""Architecture registry; importing this package registers every built-in network (each module of the package
registers its builders; a network of your own is a plugin module, see stride.plugins)."""

from stride.architectures.registry import build, get, names, register, validate_params, weight_count
from stride.plugins import import_submodules

import_submodules(__name__)

__all__ = ["build", "get", "names", "register", "validate_params", "weight_count"]
