"""How stylised a model's images are, measured the same way for every model (docs/stylization.md, "Quality").

Training losses depend on each run's loss network, layers and weights, so they cannot rank two models. The
reported numbers use one fixed ruler instead: VGG-16 with seeded random filters at a quarter of its width
(stride.lightning_modules.perceptual), content layer conv2_2 and style layers conv1_2, conv2_2, conv3_3,
conv4_3 with equal weights (the fast method's layers, Johnson et al. 2016). It needs no weights file, so
`stride evaluate` and `stride promote` reproduce a run's test numbers on any machine.

- `content_loss`: eq. 5.5 of the output against its content image;
- `style_loss`: eq. 5.8 of the output against its style's Gram matrices;
- `unstyled_style_loss`: the content image's own style loss against the same style;
- `style_ratio`: the split's mean style loss over its mean unstyled style loss (a ratio of means, which images
  that happen to share their style's statistics cannot dominate): 1 means the outputs are as far from their
  styles as the content images were, 0 a perfect match of the style statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stride.lightning_modules.perceptual import (
    LossNetwork,
    LossNetworkSpec,
    content_loss,
    gram,
    resized_for_style,
    style_loss,
)

RULER = LossNetworkSpec("vgg16", weights=None, seed=0, width=0.25)
RULER_CONTENT = {"conv2_2": 1.0}
RULER_STYLE = {name: 1.0 for name in ("conv1_2", "conv2_2", "conv3_3", "conv4_3")}
RULER_STYLE_SIDE = 256  # style images are measured at this longer side, whatever size a dataset stores


class StyleRuler:
    """The fixed measurement of stylised images against their content images and styles."""

    def __init__(self, styles: Sequence[Tensor], device: torch.device | str = "cpu"):
        self.network = LossNetwork(RULER, [*RULER_CONTENT, *RULER_STYLE]).to(device)
        with torch.no_grad():
            grams = [{name: gram(f)[0] for name, f in self.network(resized_for_style(s.to(device), RULER_STYLE_SIDE)
                                                                     [None]).items() if name in RULER_STYLE}
                     for s in styles]
        self.targets = {name: torch.stack([g[name] for g in grams]) for name in RULER_STYLE}

    @torch.no_grad()
    def measure(self, outputs: Tensor, contents: Tensor, style_ids: Tensor) -> dict[str, Tensor]:
        """Per-image content_loss, style_loss and unstyled_style_loss of `outputs` (stylised with `style_ids`)."""
        found, wanted = self.network(outputs), self.network(contents)
        targets = {name: t.to(outputs.device)[style_ids] for name, t in self.targets.items()}
        styled = style_loss({n: gram(found[n]) for n in RULER_STYLE}, targets, RULER_STYLE)
        unstyled = style_loss({n: gram(wanted[n]) for n in RULER_STYLE}, targets, RULER_STYLE)
        return {"content_loss": content_loss(found, wanted, RULER_CONTENT), "style_loss": styled,
                "unstyled_style_loss": unstyled}

    @staticmethod
    def ratio(style_loss_sum: float | Tensor, unstyled_sum: float | Tensor) -> float | Tensor:
        """`style_ratio` from the sums (or means) of a split's style and unstyled style losses."""
        return style_loss_sum / max(float(unstyled_sum), 1e-12)

    @staticmethod
    def description() -> str:
        return (f"{RULER.describe()}; content {', '.join(RULER_CONTENT)}; style {', '.join(RULER_STYLE)}; "
                f"styles at {RULER_STYLE_SIDE} px")
