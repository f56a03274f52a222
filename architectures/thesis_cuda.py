"""The CUDA thesis's MNIST and CIFAR-10 networks (docs/models.md, B; Tables 3.2-3.5).

5x5 convolutions with stride 1 and padding 2, ReLU after each, 2x2/2 max-pools, no batch
normalisation; dropout after every hidden fully-connected layer. The thesis's dropout `p` is
the probability of *keeping* a unit (its sec. 2.5.2), so `keep_probability` p becomes
`nn.Dropout(1 - p)`. Weights are He-normal over the fan-in (eq. A.57), biases zero.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from stride.architectures.hyperparameters import KeepProbability
from stride.architectures.initialization import he_normal_
from stride.architectures.plain_cnn import PlainCNN, build_plain_cnn
from stride.architectures.registry import register

# Table 3.2 (MNIST) and Table 3.3 (model A) are the same stack on 1x28x28 and 3x32x32 inputs.
MODEL_A = PlainCNN(stages=((32,), (64,)), hidden_units=(1024,))
MODEL_B = PlainCNN(stages=((96,), (192,)), hidden_units=(2048, 2048))  # Table 3.4
MODEL_C = PlainCNN(stages=((96, 96), (192, 192)), hidden_units=(2048, 2048))  # Table 3.5


# name: (specification, the summary `stride` lists)
NETWORKS = {
    "mnist_lenet": (MODEL_A, "Table 3.2 LeNet-5-inspired MNIST net: conv32-pool-conv64-pool-FC1024-dropout-FC; "
                             "3,274,634 parameters"),
    "cifar_a": (MODEL_A, "Table 3.3 model A: Table 3.2's stack on colour images; 4,259,274 parameters"),
    "cifar_b": (MODEL_B, "Table 3.4 model B: conv96-pool-conv192-pool-2x(FC2048-dropout)-FC; 29,853,002 parameters"),
    "cifar_c": (MODEL_C, "Table 3.5 model C: model B with two convolutions per stage; 31,005,290 parameters "
                         "(the thesis: 30,955,290)"),
}


def _builder(name: str, spec: PlainCNN, summary: str) -> Callable[..., nn.Module]:
    def build(*, input_shape: tuple[int, ...], num_classes: int,
              keep_probability: KeepProbability = 0.5) -> nn.Module:
        network = build_plain_cnn(spec, name, input_shape, num_classes, dropout=1.0 - keep_probability)
        return he_normal_(network)

    build.__doc__ = summary
    return build


for _name, (_spec, _summary) in NETWORKS.items():
    register(_name, task="classification")(_builder(_name, _spec, _summary))
