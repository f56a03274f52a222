"""Finding a network's class-activation-map head, for any registered network, from its graph.

Class activation maps (docs/models.md, D; Zhou et al. 2016, "Learning Deep Features for
Discriminative Localization") need scores that are the global average of per-class maps:

- GAP + linear (ResNet, WRN, DenseNet): c_j = GAP(sum_i w_ji f_i + b_j) (eq. 5.3), so the
  linear layer's weights, as a 1x1 convolution over the feature maps f, give the maps;
- class conv + GAP (NiN, the digits CNN): c_j = GAP(conv(f)_j). With a nonlinearity after
  the conv the pooled maps are the class maps; without one, the conv is linear and is kept
  as the class conv over its input (for a 1x1 kernel that is the class map itself; a 3x3
  kernel gives a map at its input's finer resolution, see stride.tasks.cam).

The network is traced with torch.fx, so the head is found whether it is a tail of
nn.Sequential, `avgpool`/`fc` attributes or functional calls in a forward (torchvision's
DenseNet); only the modules that contain the classifier are traced into, so the feature
blocks may hold any Python. Anything else is refused with the reason.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from stride.errors import StrideError

NEEDED = ("they need scores that are a global average pool of feature maps followed by one linear layer (GAP + "
          "linear, as in ResNet or DenseNet) or by nothing (class conv + GAP, as in NiN)")
_IDENTITY_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_IDENTITY_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d}
_FLATTEN_FUNCTIONS = {torch.flatten, torch.squeeze, torch.reshape}
_FLATTEN_METHODS = {"flatten", "squeeze", "view", "reshape"}
_NONLINEAR_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU)
_NONLINEAR_FUNCTIONS = {F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, torch.relu}


@dataclass
class CamHead:
    """scores = GAP(class_conv(f)) for the feature maps f that `features_and_scores` returns beside the
    scores; `class_conv` is None when f are the class maps themselves."""

    features_and_scores: nn.Module  # input -> (f: N x C x h x w, scores: N x classes), the network's own modules
    class_conv: nn.Conv2d | None  # C -> classes, sharing the classifier's weights
    form: str  # "gap-linear", "class-conv" or "class-maps"
    where: str  # the layers found, for messages


class _ClassifierTracer(fx.Tracer):
    """Traces only into the modules that contain `classifier`; every other module is one call."""

    def __init__(self, classifier: str):
        super().__init__()
        self.opened = {".".join(classifier.split(".")[:n]) for n in range(1, classifier.count(".") + 1)}

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name not in self.opened


def find_cam_head(network: nn.Module) -> CamHead:
    """The CAM head of `network`, or a StrideError saying why it has none."""
    classifier = _last_classifier(network)
    try:
        with evaluation_mode(network):  # a forward's `if self.training` is decided while tracing
            graph = _ClassifierTracer(classifier).trace(network)
    except Exception as err:  # torch.fx cannot follow data-dependent Python in a forward
        raise _refusal(f"its head cannot be traced with torch.fx ({err})") from None
    traced = fx.GraphModule(network, graph)
    modules = dict(traced.named_modules())
    [result] = [n for n in graph.nodes if n.op == "output"]
    if not isinstance(result.args[0], fx.Node):
        raise _refusal("it returns several outputs")
    node = _skip_identities(result.args[0], modules)
    linear = _called_module(node, modules)
    if isinstance(linear, nn.Linear):
        pooled = _skip_identities(_skip_flatten(_skip_identities(_input(node), modules), modules), modules)
        if not _is_global_average_pool(pooled, modules):
            raise _refusal(f"its last linear layer `{node.target}` reads {_describe(pooled, modules)}, not a global "
                           "average pool")
        return CamHead(_also_returning(traced, _input(pooled)), _as_1x1_conv(linear), "gap-linear",
                       f"global average pool + linear `{node.target}`")
    pooled = _skip_flatten(node, modules)
    if not _is_global_average_pool(pooled, modules):
        raise _refusal(f"it ends with {_describe(node, modules)}, neither a linear layer nor a global average pool")
    maps = _input(pooled)
    conv = _called_module(maps, modules)
    if isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.padding_mode == "zeros" and \
            not isinstance(conv.padding, str):  # else its output is used as the class maps
        return CamHead(_also_returning(traced, _input(maps)), conv, "class-conv",
                       f"class convolution `{maps.target}` + global average pool")
    return CamHead(_also_returning(traced, maps), None, "class-maps",
                   f"class maps {_describe(maps, modules)} + global average pool")


@contextmanager
def evaluation_mode(network: nn.Module) -> Iterator[nn.Module]:
    """BatchNorm and dropout as at inference inside, the previous mode restored after."""
    was_training = network.training
    try:
        yield network.eval()
    finally:
        network.train(was_training)


def _refusal(why: str) -> StrideError:
    return StrideError(f"no class activation maps for this network: {why}; {NEEDED}")


def _last_classifier(network: nn.Module) -> str:
    """The last linear or 2-D conv layer, by registration order: the one the head is looked for around."""
    layers = [name for name, m in network.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        raise _refusal("it has no linear or 2-D convolution layer")
    return layers[-1]


def _as_1x1_conv(linear: nn.Linear) -> nn.Conv2d:
    """Eq. 5.3: the linear layer as a 1x1 convolution over the feature maps, sharing its weights."""
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None, device="meta")
    conv.weight = nn.Parameter(linear.weight.detach()[:, :, None, None], requires_grad=False)
    if linear.bias is not None:
        conv.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
    return conv


def _input(node: fx.Node) -> fx.Node:
    """The node's first argument, the value it reads: a node for every layer a head is made of."""
    arg = node.args[0]
    assert isinstance(arg, fx.Node), f"{node.format_node()}: its first argument is not a node"
    return arg


def _module_name(node: fx.Node) -> str:
    """A call_module node's target: the called module's qualified name."""
    assert isinstance(node.target, str), f"{node.format_node()}: a module call's target is not a name"
    return node.target


def _called_module(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The module a call_module node calls; None for any other node."""
    return modules.get(_module_name(node)) if node.op == "call_module" else None


def _skip_identities(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """Past dropout and identities, which are the identity in evaluation mode."""
    while isinstance(_called_module(node, modules), _IDENTITY_MODULES) or \
            (node.op == "call_function" and node.target in _IDENTITY_FUNCTIONS):
        node = _input(node)
    return node


def _skip_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """Past the N x C x 1 x 1 -> N x C reshape after pooling."""
    if isinstance(_called_module(node, modules), nn.Flatten) or \
            (node.op == "call_function" and node.target in _FLATTEN_FUNCTIONS) or \
            (node.op == "call_method" and node.target in _FLATTEN_METHODS):
        return _input(node)
    return node


def _is_global_average_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Adaptive average pooling to 1 x 1, a mean over both spatial axes, or an average pool (whose kernel
    must cover the map: stride.tasks.cam checks the maps reproduce the scores)."""
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_module":
        module = modules.get(_module_name(node))
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return _is_one(module.output_size)
        return isinstance(module, nn.AvgPool2d)
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        return _is_one(node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size"))
    if node.op == "call_function" and node.target is F.avg_pool2d:
        return True
    if (node.op == "call_function" and node.target is torch.mean) or (node.op == "call_method"
                                                                         and node.target == "mean"):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return isinstance(dims, (tuple, list)) and {d % 4 for d in dims if isinstance(d, int)} == {2, 3}
    return False


def _is_one(size: object) -> bool:
    return size == 1 or (isinstance(size, (tuple, list)) and all(s == 1 for s in size))


def _also_returning(traced: fx.GraphModule, node: fx.Node) -> fx.GraphModule:
    """The network returning (`node`'s value, its output) from one pass, with the same submodules and weights."""
    graph = fx.Graph()
    copied: dict[fx.Node, fx.Node] = {}
    for original in traced.graph.nodes:
        if original.op == "output":
            graph.output((copied[node], copied[original.args[0]]))
        else:
            copied[original] = graph.node_copy(original, lambda n: copied[n])
    return fx.GraphModule(traced, graph)


def _describe(node: object, modules: dict[str, nn.Module]) -> str:
    if not isinstance(node, fx.Node):
        return repr(node)
    if node.op == "call_module":
        return f"{type(modules[_module_name(node)]).__name__} `{node.target}`"
    if node.op == "call_function":
        name = getattr(node.target, "__name__", str(node.target))
        return f"{'indexing' if node.target is operator.getitem else name}(...)"
    return f"{node.op} {node.target}"
