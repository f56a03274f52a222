"""Architecture registry; importing this package registers every built-in network."""

from stride.architectures.registry import build, get, names, register, validate_params, weight_count
from stride.architectures import digits  # noqa: F401  (registers digits_cnn, digits_ffn)

__all__ = ["build", "get", "names", "register", "validate_params", "weight_count"]
