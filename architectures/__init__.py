"""Architecture registry; importing this package registers every built-in network."""

from stride.architectures.registry import build, get, names, register, validate_params, weight_count
from stride.architectures import digits, recurrent, tcn  # noqa: F401,E402  (each registers its builders)
from stride.architectures import (  # noqa: F401,E402
    captioning, cifar_resnets, densenets, face_detector, imagenet, lenet, nin_vgg, thesis_cuda)

__all__ = ["build", "get", "names", "register", "validate_params", "weight_count"]
