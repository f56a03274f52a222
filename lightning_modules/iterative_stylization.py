"""Iterative neural style transfer (Gatys et al. 2016; docs/models.md, D, "Neural style transfer"; docs/stylization.md,
"Iterative transfer"): the pixels of one image are optimised to minimise eq. 5.10 against a content image and the
Gram matrices of one or more style images, through a frozen loss network (stride.lightning_modules.perceptual).

The defaults are the method's own (sec. 5.3.2): VGG-19, content layer conv4_2, style layers conv1_1 ... conv5_1
with equal weights. Adam is the method's optimiser in the dissertation; L-BFGS is the original paper's.

The image stays in [0, 1] by projection: it is clamped after every optimiser step. That is stride's choice over
optimising an unconstrained tensor through a sigmoid, because
- the learning rate stays in pixel units (Adam with lr 0.02 moves a pixel by about 2% of its range per step);
- a pixel that starts black or white (common in photographs) can move at once, where a sigmoid would hold it
  in its flat tail, and starting from the content image needs no logit of it (infinite at 0 and 1);
- the loss L-BFGS sees is the loss of the image itself, not of a squashed one.
The clamp changes only the pixels a step pushed out of range. L-BFGS's line search may evaluate images slightly
outside [0, 1] between two clamps; the loss network reads them like any other.

torch is imported inside the functions: `stride --help` shows this module's defaults without loading it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stride.errors import StrideError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from stride.lightning_modules.perceptual import PerceptualLoss, PerceptualWeights

# sec. 5.3.2: the loss network and layers of the iterative method
METHOD_NETWORK = "vgg19"
METHOD_CONTENT_LAYERS = {"conv4_2": 1.0}
METHOD_STYLE_LAYERS = {name: 1.0 for name in ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")}
OPTIMIZERS = ("adam", "lbfgs")
# stride's choice: Adam's lr in pixel units; L-BFGS's first trial step, which its strong-Wolfe line search adapts
DEFAULT_LR = {"adam": 0.02, "lbfgs": 1.0}
LBFGS_LINE_SEARCH_EVALS = 20  # per step at most, so one step stays bounded
INITS = ("content", "noise")
NOISE_MEAN, NOISE_STD = 0.5, 0.2  # stride's choice: mid-grey noise, clamped to [0, 1]
LOSS_PARTS = ("total", "content", "style", "tv")


@dataclass(frozen=True)
class IterativeSettings:
    """How the image is optimised: `steps` optimiser steps (L-BFGS: iterations) from `init`, with snapshots of
    the image every `snapshot_every` steps (0: none)."""

    steps: int = 300
    optimizer: str = "adam"
    lr: float | None = None  # None: DEFAULT_LR of the optimiser
    init: str = "content"
    snapshot_every: int = 0
    seed: int = 0  # of the noise of init="noise"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise StrideError(f"optimizer {self.optimizer!r} is not known (known: {', '.join(OPTIMIZERS)})")
        if self.init not in INITS:
            raise StrideError(f"init {self.init!r} is not known (known: {', '.join(INITS)})")
        if self.steps < 1:
            raise StrideError(f"steps must be at least 1, got {self.steps}")
        if self.snapshot_every < 0:
            raise StrideError(f"snapshot_every must be 0 (none) or more, got {self.snapshot_every}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise StrideError(f"lr must be a finite number > 0, got {self.lr}")

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr


@dataclass
class IterativeResult:
    image: Tensor  # 3 x H x W in [0, 1], on the CPU
    # one row per step: the loss parts of the image after `step` optimiser steps (step 0: the initial image)
    history: list[dict[str, float]]
    snapshots: list[tuple[int, Tensor]] = field(default_factory=list)  # (step, 3 x H x W image)
    style_ratio: float = math.nan  # the result's style loss / the content image's own style loss
    content_style_loss: float = math.nan  # the denominator: how far the content image is from the style


def method_weights(content_weight: float = 1.0, style_weight: float = 1.0, tv_weight: float = 0.0,
                   content_layers: dict[str, float] | None = None,
                   style_layers: dict[str, float] | None = None) -> PerceptualWeights:
    """Eq. 5.10's weights, with the method's layers unless others are given."""
    from stride.lightning_modules.perceptual import PerceptualWeights

    return PerceptualWeights(dict(content_layers or METHOD_CONTENT_LAYERS), dict(style_layers or METHOD_STYLE_LAYERS),
                             content_weight, style_weight, tv_weight)


def style_mixture(weights: Sequence[float] | None, count: int) -> Tensor:
    """1 x S blend of the style targets: `weights` scaled to sum to 1 (equal weights if None), so the blended Gram
    matrices stay a weighted mean of the styles' and (2, 1) means what (2/3, 1/3) means."""
    import torch

    if weights is None:
        weights = [1.0] * count
    if len(weights) != count:
        raise StrideError(f"{len(weights)} style weights for {count} style image(s): give one weight per style")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise StrideError(f"style weights must be finite, >= 0 and not all 0, got {list(weights)}")
    mixture = torch.tensor([float(w) for w in weights])
    return (mixture / mixture.sum())[None]


def initial_image(content: Tensor, init: str, seed: int) -> Tensor:
    import torch

    if init == "content":
        return content.clone()
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(content.shape, generator=generator) * NOISE_STD + NOISE_MEAN
    return noise.to(content.device).clamp_(0, 1)


def stylize(perceptual: PerceptualLoss, content: Tensor, styles: Sequence[Tensor], settings: IterativeSettings,
            style_weights: Sequence[float] | None = None, *, device: torch.device | str = "cpu",
            on_step: Callable[[dict[str, float]], None] | None = None, progress: bool = False) -> IterativeResult:
    """Optimise an image of `content`'s size (3 x H x W in [0, 1]) toward `styles` (each 3 x H' x W', scaled as
    the caller wants the patterns) blended by `style_weights`. `on_step` sees each history row as it is made;
    `progress` shows a bar on stderr."""
    import torch
    from tqdm import tqdm

    mixture = style_mixture(style_weights, len(styles)).to(device)
    perceptual.network.to(device)
    content = content.to(device)[None]
    targets = perceptual.style_targets([style.to(device) for style in styles])
    image = initial_image(content, settings.init, settings.seed).requires_grad_(True)
    lr = settings.learning_rate
    optimizer: torch.optim.Optimizer
    if settings.optimizer == "adam":
        optimizer = torch.optim.Adam([image], lr=lr)
    else:  # one iteration per step(), its curvature pairs kept in the optimiser's state between steps
        optimizer = torch.optim.LBFGS([image], lr=lr, max_iter=1, max_eval=LBFGS_LINE_SEARCH_EVALS,
                                      line_search_fn="strong_wolfe")

    history: list[dict[str, float]] = []
    snapshots: list[tuple[int, Tensor]] = []

    def record(step: int, total: Tensor, parts: dict[str, Tensor]) -> dict[str, float]:
        row = {"step": step, "total": float(total), **{name: float(parts[name].sum()) for name in LOSS_PARTS[1:]}}
        if not math.isfinite(row["total"]):
            raise StrideError(f"the loss became {row['total']} at step {step}; lower the learning rate or the weights")
        history.append(row)
        if on_step is not None:
            on_step(row)
        return row

    bar = tqdm(total=settings.steps, desc="stylize", unit="step", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    first: list[tuple[Tensor, dict[str, Tensor]]] = []  # the loss at the image a step starts from

    def closure() -> Tensor:  # L-BFGS calls it again for each point its line search tries
        optimizer.zero_grad(set_to_none=True)
        total, parts = perceptual(image, content, targets, mixture)
        total.backward()
        if not first:
            first.append((total.detach(), {name: part.detach() for name, part in parts.items()}))
        return total

    with bar:
        for step in range(settings.steps):
            first.clear()
            optimizer.step(closure)
            with torch.no_grad():
                image.clamp_(0, 1)
            row = record(step, *first[0])
            if settings.snapshot_every and (step + 1) % settings.snapshot_every == 0:
                snapshots.append((step + 1, image.detach()[0].cpu().clone()))
            bar.set_postfix(loss=f"{row['total']:.4g}", refresh=False)
            bar.update()

    with torch.no_grad():
        record(settings.steps, *perceptual(image, content, targets, mixture))
        unstyled = perceptual(content, content, targets, mixture)[1]["style"].sum()
    content_style = float(unstyled)
    return IterativeResult(image.detach()[0].cpu(), history, snapshots,
                           style_ratio=history[-1]["style"] / max(content_style, 1e-12),
                           content_style_loss=content_style)
